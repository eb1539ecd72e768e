"""The docs stay true: the CLI reference is current, and every `wtours ...` line in the README and
docs/ names a real command with real options. The demo runs the whole pipeline end to end."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from wtours.cli.main import cli

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_cli_reference_is_current():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "cli_reference.py"), "--check"])
    assert result.returncode == 0, "docs/cli.md is stale: run `python scripts/cli_reference.py`"


def command_lines():
    for doc in DOCS:
        text = doc.read_text()
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
            joined = block.replace("\\\n", " ")
            for line in joined.splitlines():
                line = line.split(" #")[0].strip()
                match = re.search(r"(?:^|-m )wtours (.*)$", line)
                if match and not line.startswith("#") and "import" not in line:
                    yield doc.name, match.group(1)


@pytest.mark.parametrize("doc,line", list(command_lines()))
def test_documented_commands_exist_with_their_options(doc, line):
    words = shlex.split(line)
    command: click.Command = cli
    while isinstance(command, click.Group) and words and words[0] in command.commands:
        command = command.commands[words.pop(0)]
    assert not isinstance(command, click.Group) or not words or words[0].startswith("-"), f"{doc}: {line}"
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"-h", "--help"}
    for word in words:
        if word.startswith("-") and not word.startswith("--") and len(word) > 2 and not word[1].isalpha():
            continue  # a negative number
        if word.startswith("-"):
            assert word.split("=")[0] in known, f"{doc}: `wtours {line}`: unknown option {word}"


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    result = subprocess.run([sys.executable, "-m", "wtours", "demo", "--root", str(tmp_path), "--steps", "6", "-q"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "demo"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and (run / "loss.png").is_file() and (run / "teacher_backbone.pth").is_file()
    summary = json.loads((tmp_path / "stats" / "demo-walk" / "summary.json").read_text())
    assert [round(t) for t in summary["cuts"]] == [16, 30, 48]  # 42 starts the blank stretch, not in the shards
    index = json.loads((tmp_path / "shards" / "demo-walk" / "index.json").read_text())
    assert index["dropped"]["blank"] == 12
    assert (tmp_path / "stats" / "corpus.md").is_file()
