"""The on-disk contract: data root, per-video folders, names and keys (docs/data-format.md).

Every path, shard name and sample key in the project is built here and nowhere else.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from wtours.errors import WtoursError

ROOT_ENV = "WTOURS_ROOT"
SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
SHARD_NAME_PATTERN = re.compile(r"^(?P<slug>[a-z0-9][a-z0-9-]*)-(?P<number>\d{6})\.tar$")
INFO_FILE = "info.json"
INDEX_FILE = "index.json"


def default_root() -> Path:
    """`$WTOURS_ROOT`, else the per-user data folder (`$XDG_DATA_HOME/wtours`)."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(xdg) / "wtours"


def resolve_root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root else default_root()


def validate_slug(name: str) -> str:
    """A video's name is a folder and a shard-name prefix: never a path, never a dot."""
    if not isinstance(name, str) or not SLUG_PATTERN.match(name):
        raise WtoursError(
            f"{name!r} is not a valid video name",
            "use lowercase ASCII letters, digits and '-', starting with a letter or digit "
            "(at most 63 characters), e.g. 'my-walk'",
        )
    return name


class Layout:
    """Paths under one data root, per `docs/data-format.md`."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = resolve_root(root)

    def video_dir(self, slug: str) -> Path:
        return self.root / "videos" / validate_slug(slug)

    def info_path(self, slug: str) -> Path:
        return self.video_dir(slug) / INFO_FILE

    def shard_dir(self, slug: str) -> Path:
        return self.root / "shards" / validate_slug(slug)

    def index_path(self, slug: str) -> Path:
        return self.shard_dir(slug) / INDEX_FILE

    def stats_dir(self, slug: str) -> Path:
        return self.root / "stats" / validate_slug(slug)

    def video_slugs(self) -> list[str]:
        """Slugs with a folder under videos/ (downloaded, partly downloaded or added)."""
        base = self.root / "videos"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and SLUG_PATTERN.match(p.name))

    def read_info(self, slug: str) -> dict[str, Any] | None:
        return read_json(self.info_path(slug))

    def read_index(self, slug: str) -> dict[str, Any] | None:
        return read_json(self.index_path(slug))


def shard_name(slug: str, number: int) -> str:
    return f"{slug}-{number:06d}.tar"


def sample_key(slug: str, frame: int) -> str:
    """`<slug>-<frame:08d>`: no dots, since WebDataset splits keys at the first dot."""
    return f"{slug}-{frame:08d}"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise WtoursError(f"{path} is not valid JSON ({e})", "delete it and rerun the command that writes it") from e


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a temporary name in the same folder, then rename it into place: a killed run
    never leaves a partial file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary name in the same folder, fsync, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
