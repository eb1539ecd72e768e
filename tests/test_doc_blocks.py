"""Every shell block of the README and docs/ runs as a user would paste it, top to bottom.

One test per doc: its ```bash, ```sh, ```shell and ```console blocks run in the order they appear, each
with `bash -e`, in one fresh working folder with one fresh data root ($WTOURS_ROOT), the venv's `wtours`
and `python` first on PATH, offline (HF_HUB_OFFLINE=1) and with a home of their own. What a block
writes stays for the blocks after it, as it would for a user. A ```console block runs its `$ ` lines.

Each block carries the doc-test marker of tests/test_docs.py on the line before its fence:
`<!-- doc-test: setup=NAME[,NAME] -->` prepares what the block needs before it first runs (test_docs.py's
SETUPS, copied into the doc's fresh root and folder), `setup=none` runs it as it is, and
`skip reason="..."` is for what cannot run on this machine (YouTube, the real Hub, a GPU, SLURM, hours of
compute), with the reason in the doc for its readers too (and in the test's skip line when none of a doc's
blocks can run). A block with neither fails, in the fast tier too (test_every_shell_block_runs_or_says_why),
so a new command in the docs is run or explained."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import test_docs
from tests.test_docs import DOCS, SETUPS, fenced_blocks, parse_marker

# The fixtures the setups name (and those they use), shared with test_docs.py: a setup added there works here.
for _fixture in {"doc_root", *(fixture for _, fixture, _ in SETUPS.values())}:
    globals()[_fixture] = getattr(test_docs, _fixture)

SHELL = ("bash", "sh", "shell", "console")
BLOCK_TIMEOUT_S = 600
# The setups that put venice into the doc's root, and which of its folders (videos/, shards/, stats/) each brings.
VENICE_PARTS = {"venice-video": ("videos",), "venice-shards": ("videos", "shards"),
                "venice-stats": ("videos", "shards", "stats"), "venice-run": ("videos", "shards")}


@dataclass(frozen=True)
class ShellBlock:
    doc: str
    line: int  # of the opening fence
    lang: str
    code: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def shell_blocks(doc: Path) -> list[ShellBlock]:
    """The doc's shell blocks in order, with stray markers (which test_docs.py reports) left out."""
    return [ShellBlock(name, line, lang, code, marker) for name, line, lang, code, marker in
            fenced_blocks(doc.name, doc.read_text()) if lang in SHELL]


def script_of(block: ShellBlock) -> str:
    """What a user pastes: the block itself, or for ```console the commands after `$ ` (and their
    continuation lines)."""
    if block.lang != "console":
        return block.code
    lines, continued = [], False
    for line in block.code.splitlines():
        if line.startswith("$ ") or continued:
            command = line[2:] if line.startswith("$ ") and not continued else line
            lines.append(command)
            continued = command.rstrip().endswith("\\")
    return "\n".join(lines) + "\n"


def setups_of(block: ShellBlock) -> tuple[list[str], str | None]:
    """(setup names, skip reason) of a block's marker; fails for a block without one."""
    assert block.marker is not None, (
        f"{block.where}: this {block.lang} block has no doc-test marker, so it neither runs nor says why not; put one "
        f"on the line before its fence: <!-- doc-test: setup=NAME[,NAME] --> (setups: {', '.join(sorted(SETUPS))}), "
        f'<!-- doc-test: setup=none -->, or <!-- doc-test: skip reason="what it needs that this machine lacks: '
        f'YouTube, the real Hub, a GPU, ..." -->')
    return parse_marker(block.marker)


def test_every_shell_block_runs_or_says_why():
    """Checked without running anything: every shell block of every doc is marked to run or to be skipped
    with a reason (all the unmarked ones named at once)."""
    problems = []
    for doc in DOCS:
        for block in shell_blocks(doc):
            try:
                _, reason = setups_of(block)
                assert reason is None or len(reason) >= 10, f"{block.where}: say why it cannot run here"
            except AssertionError as error:
                problems.append(str(error).splitlines()[0])
    assert not problems, "\n".join(problems)


def docs_with_shell_blocks() -> list[Path]:
    return [doc for doc in DOCS if shell_blocks(doc)]


class DocSession:
    """One doc's fresh working folder, data root and environment, prepared setup by setup."""

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.work, self.root, self.home = tmp_path / "work", tmp_path / "root", tmp_path / "home"
        for folder in (self.work, self.root, self.home):
            folder.mkdir()
        bin_dir = str(Path(sys.executable).parent)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        self.env.update(WTOURS_ROOT=str(self.root), HOME=str(self.home), HF_HOME=str(self.home / "hf"),
                        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                        PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
        self.prepared: set[str] = set()

    def prepare(self, names: list[str]) -> None:
        for name in names:
            if name not in self.prepared:
                self._prepare(name)
                self.prepared.add(name)

    def _prepare(self, name: str) -> None:
        fixture = self.request.getfixturevalue(SETUPS[name][1])
        if name in VENICE_PARTS:
            self.add_venice(fixture if name == "venice-stats" else self.request.getfixturevalue("doc_root"),
                            VENICE_PARTS[name])
            if name == "venice-run":
                shutil.copytree(fixture, self.work / "runs" / "venice")
        elif name == "mirror-download":
            downloads = self.home / "Downloads"
            downloads.mkdir()
            video = shutil.copyfile(next((fixture / "videos" / "venice").glob("*.mp4")), downloads / "Venice.mp4")
            with zipfile.ZipFile(downloads / "Venice.zip", "w") as archive:
                archive.write(video, "Venice.mp4")
        elif name == "digits":
            (self.work / "digits").symlink_to(fixture, target_is_directory=True)
        elif name in ("hub-model", "hub-login"):
            from tests.test_hub import TOKEN

            for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN"):
                self.env.pop(key, None)
            self.env.update(HF_ENDPOINT=fixture.url, HF_HUB_DISABLE_XET="1")
            if name == "hub-login":
                self.env["HF_TOKEN"] = TOKEN
        else:
            pytest.fail(f"doc-test setup {name!r} is not prepared for shell blocks: add it to DocSession._prepare")

    def add_venice(self, built: Path, parts: tuple[str, ...]) -> None:
        """Copy these parts of the prepared venice into the doc's root, where blocks write: its registered
        video (kept if there), its shards and its statistics (replacing any the blocks made)."""
        for part in parts:
            target = self.root / part / "venice"
            if part != "videos" or not target.exists():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(built / part / "venice", target, symlinks=True)

    def run(self, block: ShellBlock) -> None:
        script = self.work.parent / f"block-{block.line}.sh"
        script.write_text(script_of(block))
        result = subprocess.run(["bash", "-e", str(script)], cwd=self.work, env=self.env, capture_output=True,
                                text=True, timeout=BLOCK_TIMEOUT_S)
        assert result.returncode == 0, (f"{block.where} failed (status {result.returncode}) as written:\n{block.code}"
                                        f"--- stdout\n{result.stdout[-2000:]}\n--- stderr\n{result.stderr[-4000:]}")


def runnable(blocks: list[ShellBlock]) -> Iterator[tuple[ShellBlock, list[str]]]:
    for block in blocks:
        names, reason = setups_of(block)
        if reason is None:
            yield block, names


@pytest.mark.slow
@pytest.mark.parametrize("doc", docs_with_shell_blocks(), ids=lambda doc: doc.name)
def test_doc_shell_blocks_run_top_to_bottom(doc: Path, tmp_path: Path, request: pytest.FixtureRequest):
    blocks = shell_blocks(doc)
    skipped = [f"{b.where}: {setups_of(b)[1]}" for b in blocks if setups_of(b)[1] is not None]
    session = DocSession(tmp_path, request)
    ran = 0
    for block, names in runnable(blocks):
        session.prepare(names)
        session.run(block)
        ran += 1
    if not ran:
        pytest.skip(f"{doc.name}: every shell block needs what this machine lacks: " + "; ".join(skipped))


def test_blocks_are_read_as_a_user_pastes_them(tmp_path):
    """A ```console block runs its `$ ` lines (with their continuations), not the output shown; a shell
    block without a marker is refused, one with a reason is skipped."""
    doc = tmp_path / "x.md"
    doc.write_text("""<!-- doc-test: setup=none -->
```console
$ wtours list --root r \\
    --json
{"videos": []}
$ echo done
done
```

```sh
wtours list
```

<!-- doc-test: skip reason="needs a GPU and hours" -->
```bash
wtours train --shards venice --out runs/venice
```
""")
    console, unmarked, skipped = shell_blocks(doc)
    assert script_of(console) == "wtours list --root r \\\n    --json\necho done\n"
    assert setups_of(console) == ([], None) and setups_of(skipped) == ([], "needs a GPU and hours")
    with pytest.raises(AssertionError, match="x.md:10: this sh block has no doc-test marker"):
        setups_of(unmarked)
