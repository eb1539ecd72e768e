"""Conventions every command keeps: help text everywhere, documented exit statuses, a local --root."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click
import pytest

from tests.cli import assert_clean_error, run_wtours, run_wtours_process
from wtours.cli.main import cli
from wtours.errors import EXIT_CODES, EXIT_FAILURE, EXIT_USAGE, UsageError, WtoursError

DOCS = Path(__file__).resolve().parents[1] / "docs"


def walk(command: click.Command, path: tuple[str, ...] = ("wtours",)):
    """(command path, command) for the group and every command below it."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


def test_every_command_and_option_has_help():
    missing = []
    for path, command in walk(cli):
        if not (command.help or command.short_help):
            missing.append(" ".join(path))
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip():
                missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert not missing, f"without help text: {', '.join(missing)}"


def test_help_lists_the_exit_statuses_and_the_docs_agree():
    text = run_wtours(["--help"]).output
    table = (DOCS / "troubleshooting.md").read_text()
    for code, meaning in EXIT_CODES:
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning)}$", text, re.MULTILINE), (code, text)
        assert re.search(rf"^\| {code} \|", table, re.MULTILINE), f"exit status {code} missing in troubleshooting.md"


def test_a_bad_option_is_a_usage_error(tmp_path):
    """In a process of its own: the exit status reaches the shell through `python -m wtours`."""
    result = run_wtours_process(["list", "--root", str(tmp_path), "--no-such-option"])
    assert result.returncode == EXIT_USAGE and "No such option" in result.stderr


@pytest.mark.parametrize("args", [["download", "--city", "../etc", "--dry-run"],
                                  ["download", "--url", "http://127.0.0.1:1/x.mp4", "--name", "Bad Name", "--dry-run"],
                                  ["download", "--dry-run"],
                                  ["train", "--shards", "walk", "--out", "run", "--out-dim", "0"],
                                  ["train", "--shards", "walk", "--out", "run", "--set", "model.loss.teacher_temp=0"]])
def test_a_bad_name_or_value_is_a_usage_error(tmp_path, args):
    result = run_wtours([*args, "--root", str(tmp_path)])
    assert_clean_error(result, EXIT_USAGE, kind=UsageError)


def test_a_runtime_failure_is_not_a_usage_error(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video\x00" * 400)
    result = run_wtours(["add", str(junk), "--name", "junk", "--root", str(tmp_path / "root")])
    assert_clean_error(result, EXIT_FAILURE, kind=WtoursError)
    assert not issubclass(result.error, UsageError)


@pytest.mark.parametrize("url", ["s3://bucket/walks", "hf://datasets/alice/walks", "http://example.org/root",
                                 "gs://bucket"])
def test_root_refuses_a_url(tmp_path, url):
    result = run_wtours(["list", "--root", url], cwd=tmp_path)
    assert result.returncode == EXIT_USAGE
    assert "is a URL" in result.stderr and "wtours pull" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no folder named "s3:" (or anything) was made


def test_root_from_the_environment_refuses_a_url(tmp_path):
    result = run_wtours(["list"], cwd=tmp_path, env={**os.environ, "WTOURS_ROOT": "s3://bucket/walks"})
    assert result.returncode == EXIT_USAGE and "$WTOURS_ROOT" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_local_root_named_like_a_scheme_is_still_a_folder(tmp_path):
    result = run_wtours(["list", "--root", str(tmp_path / "s3-mirror")])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("option", ["--root", "--out"])
def test_train_refuses_a_url_for_its_root_and_run_folder(tmp_path, option):
    """`wtours train` declares --root and --out through its config: the same refusal, before any folder."""
    args = {"--root": str(tmp_path / "root"), "--out": str(tmp_path / "run"), option: "s3://bucket/walks"}
    result = run_wtours(["train", "--shards", "walk", *[w for pair in args.items() for w in pair]], cwd=tmp_path)
    assert_clean_error(result, EXIT_USAGE, f"{option} 's3://bucket/walks' is a URL")
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_a_url_for_its_root(tmp_path):
    result = run_wtours(["demo", "--root", "hf://datasets/alice/walks"], cwd=tmp_path)
    assert result.returncode == EXIT_USAGE and "is a URL" in result.stderr
    assert list(tmp_path.iterdir()) == []
