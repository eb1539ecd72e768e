"""Errors a user can act on: what went wrong, and what to do about it."""

from __future__ import annotations


class WtoursError(Exception):
    """A failure with an actionable hint; the CLI prints both and exits with `exit_code`."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class IncompleteError(WtoursError):
    """Work finished partly (e.g. a video truncated midway): what was done is kept and indexed."""

    exit_code = 3
