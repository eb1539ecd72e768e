"""The docs stay true: the CLI reference is current, and every `wtours ...` line in the README and
docs/ names a real command with real options. The demo runs the whole pipeline end to end."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from wtours.cli.main import cli

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# the fenced blocks of the docs, each with the doc-test marker before it (see "the docs' code snippets run")
DOC_TEST = re.compile(r"<!--\s*doc-test:\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")


def snippets():
    for doc in DOCS:
        yield from fenced_blocks(doc.name, doc.read_text())


def fenced_blocks(name: str, text: str):
    """(doc, line of the opening fence, language, code, marker text or None) of every fenced block,
    plus a ("stray", ...) entry for a marker that is not right before a fence."""
    lines = text.splitlines()
    i, marker, marker_line = 0, None, 0
    while i < len(lines):
        line = lines[i]
        found = DOC_TEST.fullmatch(line.strip())
        fence = FENCE.match(line)
        if found:
            if marker is not None:
                yield name, marker_line, "stray", "", marker
            marker, marker_line = found.group(1), i + 1
        elif fence:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            yield name, i + 1, fence.group(1), "\n".join(lines[i + 1:end]) + "\n", marker
            marker, i = None, end
        elif line.strip() and marker is not None:
            yield name, marker_line, "stray", "", marker
            marker = None
        i += 1
    if marker is not None:
        yield name, marker_line, "stray", "", marker


def test_cli_reference_is_current():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "cli_reference.py"), "--check"])
    assert result.returncode == 0, "docs/cli.md is stale: run `python scripts/cli_reference.py`"


def command_lines():
    for doc, _, lang, block, _ in snippets():
        if lang in ("bash", "sh", ""):
            joined = block.replace("\\\n", " ")
            for line in joined.splitlines():
                line = line.split(" #")[0].strip()
                match = re.search(r"(?:^|-m )wtours (.*)$", line)
                if match and not line.startswith("#") and "import" not in line:
                    yield doc, match.group(1)


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
    assert result.stdout.startswith("demo: 6 steps, loss ") and result.stdout.count("\n") == 1, result.stdout
    run = tmp_path / "runs" / "demo"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and (run / "loss.png").is_file() and (run / "teacher_backbone.pth").is_file()
    summary = json.loads((tmp_path / "stats" / "demo-walk" / "summary.json").read_text())
    assert [round(t) for t in summary["cuts"]] == [16, 30, 48]  # 42 starts the blank stretch, not in the shards
    index = json.loads((tmp_path / "shards" / "demo-walk" / "index.json").read_text())
    assert index["dropped"]["blank"] == 12
    assert (tmp_path / "stats" / "corpus.md").is_file()


# ---------------------------------------------------------------- the docs' code snippets run
#
# Every ```python fence in the README and docs/ runs, as written, in a fresh Python process whose
# working directory is an empty temporary folder and whose $WTOURS_ROOT is a prepared data root. A
# fence says what it needs in an HTML comment on the line before it (invisible when rendered):
#
#     <!-- doc-test: setup=venice-run,digits -->    prepare these (SETUPS below), then run it
#     <!-- doc-test: setup=none -->                 run it as it is
#     <!-- doc-test: setup=none slow -->            ... in the slow tier (the snippet itself takes over 3 s)
#     <!-- doc-test: skip reason="..." -->          only for what truly cannot run here (network, GPU,
#                                                   third-party weights); the reason is required
#
# A python fence without a marker fails. A ```bash fence runs too (with `bash -e`, the venv's
# `wtours` and `python` first on PATH) when it carries a marker; unmarked bash fences are only
# checked line by line above.

def parse_marker(marker: str) -> tuple[list[str], str | None]:
    """`setup=a,b [slow]` -> (["a", "b"], None); `setup=none` -> ([], None); `skip reason="..."` -> ([], reason)."""
    skip = re.fullmatch(r'skip\s+reason="([^"]+)"', marker)
    if skip:
        return [], skip.group(1)
    setup = re.fullmatch(r"setup=([\w,-]+)( slow)?", marker)
    assert setup, (f"unreadable doc-test marker {marker!r}: write setup=NAME[,NAME] (then ` slow` if it takes over "
                   f"3 s), setup=none or skip reason=\"...\"")
    names = [] if setup.group(1) == "none" else setup.group(1).split(",")
    unknown = [n for n in names if n not in SETUPS]
    assert not unknown, f"unknown doc-test setup {unknown}; known: {', '.join(sorted(SETUPS))}"
    return names, None


# setup name -> (what it prepares, session fixture, slow). Slow: its fixture takes over 3 s to build.
SETUPS = {
    "venice-shards": ("$WTOURS_ROOT holds `venice` (a 40 s synthetic walk, registered and sharded: 2 fps, 128 px, "
                      "2 shards of 40 samples)", "doc_root", False),
    "venice-stats": ("venice-shards, in a root of its own that also holds `wtours stats --city venice --no-classes` "
                     "(stats/venice/frames.parquet)", "doc_stats", False),
    "venice-run": ("venice-shards, and runs/venice/ in the working folder: a 2-step vit_micro `wtours train` run "
                   "on it (checkpoint.pth, config.json, log.jsonl)", "doc_run", True),
    "hub-model": ("venice-run exported (`wtours export`) and pushed as alice/venice-vits16 to a local Hub "
                  "(tests/hub_server.py); HF_ENDPOINT points at it, HF_HUB_OFFLINE is unset", "doc_hub", True),
    "digits": ("digits/train/<digit>/*.png and digits/val/<digit>/*.png in the working folder: scikit-learn's digits "
               "as eval.md's script writes them, a quarter of them (337 train, 113 val)", "doc_digits", False),
}


def snippet_params():
    for doc, line, lang, code, marker in snippets():
        if lang == "stray":
            yield pytest.param(doc, line, lang, code, marker, id=f"{doc}:{line}:stray-marker")
        elif lang == "python" or (lang in ("bash", "sh") and marker is not None):
            slow = False
            if marker is not None and not marker.startswith("skip"):
                names = re.findall(r"[\w-]+", marker.partition("=")[2])
                slow = any(SETUPS.get(n, ("", "", False))[2] for n in names) or "slow" in names or lang != "python"
            yield pytest.param(doc, line, lang, code, marker, id=f"{doc}:{line}",
                               marks=[pytest.mark.slow] if slow else [])


@pytest.fixture(scope="session")
def doc_root(tmp_path_factory) -> Path:
    from tests.videos import sharded_root

    return sharded_root(tmp_path_factory.mktemp("doc-root"), seconds=40.0, samples_per_shard=40, slug="venice")


@pytest.fixture(scope="session")
def doc_stats(doc_root, tmp_path_factory) -> Path:
    root = Path(shutil.copytree(doc_root, tmp_path_factory.mktemp("doc-stats") / "root", symlinks=True))
    result = subprocess.run([sys.executable, "-m", "wtours", "stats", "--city", "venice", "--no-classes", "-q",
                             "--root", str(root)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.fixture(scope="session")
def doc_run(doc_root, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("doc-run") / "venice"
    result = subprocess.run(
        [sys.executable, "-m", "wtours", "train", "--shards", "venice", "--root", str(doc_root), "--out", str(run),
         "--arch", "vit_micro", "--out-dim", "256", "--n-local", "2", "--batch-size", "2", "--clip-frames", "2",
         "--steps", "2", "--workers", "0", "--device", "cpu", "--log-every", "1", "-q"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


@pytest.fixture(scope="session")
def doc_hub(doc_run, tmp_path_factory):
    """A local Hub holding the doc run's export as alice/venice-vits16 (what docs/models.md pushes)."""
    from tests.hub_server import HubServer
    from tests.test_hub import TOKEN, env_for

    home = tmp_path_factory.mktemp("doc-hub")
    with HubServer({TOKEN: "alice"}) as hub:
        env = env_for(hub, home)
        for args in (["export", str(doc_run / "checkpoint.pth"), "--out", str(home / "venice-vits16"), "-q"],
                     ["push", "--model", str(home / "venice-vits16"), "--repo", "alice/venice-vits16", "-q"]):
            result = subprocess.run([sys.executable, "-m", "wtours", *args], env=env, capture_output=True, text=True,
                                    timeout=300)
            assert result.returncode == 0, result.stderr[-3000:]
        yield hub


@pytest.fixture(scope="session")
def doc_digits(tmp_path_factory) -> Path:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("doc-digits") / "digits"
    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images[::4], digits.target[::4])):
        part = folder / ("val" if i % 4 == 0 else "train") / str(label)
        part.mkdir(parents=True, exist_ok=True)
        scaled = np.rint(image * 255 / 16).astype(np.uint8)
        Image.fromarray(scaled).resize((32, 32), Image.NEAREST).save(part / f"{i:04d}.png")
    return folder


def prepare(names: list[str], request, work: Path, env: dict) -> None:
    """Put what the named setups provide into the working folder and environment."""
    for name in names:
        fixture = request.getfixturevalue(SETUPS[name][1])
        if name in ("venice-shards", "venice-stats"):
            env["WTOURS_ROOT"] = str(fixture)
        elif name == "venice-run":
            env["WTOURS_ROOT"] = str(request.getfixturevalue("doc_root"))
            shutil.copytree(fixture, work / "runs" / "venice")  # a copy: snippets may write beside it (viz)
        elif name == "hub-model":
            for key in ("HF_HUB_OFFLINE", "HF_TOKEN"):
                env.pop(key, None)
            env.update(HF_ENDPOINT=fixture.url, HF_HUB_DISABLE_XET="1")
        elif name == "digits":
            (work / "digits").symlink_to(fixture, target_is_directory=True)


@pytest.mark.parametrize("doc,line,lang,code,marker", list(snippet_params()))
def test_doc_snippet_runs(doc, line, lang, code, marker, request, tmp_path):
    where = f"{doc}:{line}"
    assert lang != "stray", f"{where}: doc-test marker {marker!r} is not on the line right before a ``` fence"
    assert marker is not None, (
        f"{where}: this python snippet has no doc-test marker; put one on the line before its fence: "
        f'<!-- doc-test: setup=NAME[,NAME] --> (setups: {", ".join(sorted(SETUPS))}), <!-- doc-test: setup=none -->, '
        f'or <!-- doc-test: skip reason="why it cannot run offline on a CPU" -->')
    names, skip = parse_marker(marker)
    if skip is not None:
        pytest.skip(f"{where}: {skip}")
    work = tmp_path / "work"
    work.mkdir()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "WTOURS_ROOT": str(tmp_path / "empty-root"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf-home"),  # caches (`datasets`) stay out of the user's
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("HF_TOKEN", None)
    prepare(names, request, work, env)
    script = work / ("snippet.py" if lang == "python" else "snippet.sh")
    script.write_text(code)
    command = [sys.executable, script.name] if lang == "python" else ["bash", "-e", script.name]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{where} failed:\n{code}\n--- stdout\n{result.stdout[-2000:]}\n--- stderr\n" \
                                   f"{result.stderr[-4000:]}"


def test_doc_test_markers_parse():
    """Every marker in the docs names known setups or gives a skip reason (checked without running)."""
    for doc, line, lang, _, marker in snippets():
        assert lang != "stray", f"{doc}:{line}: doc-test marker {marker!r} is not right before a ``` fence"
        if marker is not None:
            names, reason = parse_marker(marker)
            assert reason is None or len(reason) >= 10, f"{doc}:{line}: say why it is skipped"


def test_loader_md_problem_counts_reach_the_dataset_with_workers(doc_root, tmp_path):
    """loader.md: `dataset.problems` counts what every worker skipped (workers count in their own copy
    of the dataset; the loader adds the deltas each batch carries)."""
    import dataclasses

    from wtours.clips.epoch import ClipConfig
    from wtours.clips.pipeline import ClipDataset, LoaderConfig, make_loader
    from wtours.clips.spec import resolve

    shards = resolve(["venice"], root=doc_root)
    broken = tmp_path / shards[1].entry.name
    broken.write_bytes(Path(shards[1].url).read_bytes()[:5000])  # cut inside the first samples
    shards[1] = dataclasses.replace(shards[1], url=str(broken))
    config = LoaderConfig(batch_size=4, workers=2, augment="gpu", clip=ClipConfig(frames=4, stride=1.0))
    dataset = ClipDataset(shards, config)
    batches = list(make_loader(dataset))
    carried = {url for batch in batches for url in (batch.problems or {}).get("bad_shards", {})}
    assert set(dataset.problems.bad_shards) == carried == {str(broken)}
    assert len(batches) == len(dataset)


@pytest.mark.slow  # importing torchvision (for decode_jpeg) alone takes several seconds on two busy cores
def test_gpu_augmenter_keeps_a_batch_problem_counts(doc_root):
    import numpy as np
    import torch

    from wtours.clips.augment import MultiCropConfig
    from wtours.clips.pipeline import GpuAugmenter, RawClipBatch
    from wtours.clips.spec import resolve
    from wtours.clips.stages import Problems, open_shards, tar_samples

    shard = resolve(["venice"], root=doc_root)[0]
    sample = next(iter(tar_samples(open_shards([shard], Problems()), Problems())))
    problems = {"bad_shards": {"x.tar": "ReadError"}, "bad_samples": 1, "bad_clips": 2}
    raw = RawClipBatch([torch.frombuffer(bytearray(sample.jpg), dtype=torch.uint8)], np.array([[128, 192]]),
                       [sample.key], 1, problems)
    assert GpuAugmenter(MultiCropConfig(), "cpu")(raw).problems == problems


def test_doc_test_markers_are_read_strictly():
    """The marker rules catch a missing, misplaced, unknown or reason-less marker."""
    text = """```python
print(1)
```

<!-- doc-test: setup=venice-shards slow -->
```python
print(2)
```
<!-- doc-test: setup=none -->
Prose between the marker and its fence.

```bash
wtours list
```
<!-- doc-test: setup=none -->
"""
    blocks = list(fenced_blocks("x.md", text))
    assert [(line, lang, marker) for _, line, lang, _, marker in blocks] == [
        (1, "python", None), (6, "python", "setup=venice-shards slow"), (9, "stray", "setup=none"),
        (12, "bash", None), (15, "stray", "setup=none")]
    assert blocks[1][3] == "print(2)\n"
    assert parse_marker("setup=venice-run,digits") == (["venice-run", "digits"], None)
    assert parse_marker('skip reason="needs the network"') == ([], "needs the network")
    for bad in ("setup=venice-run,nope", "skip", 'skip reason=""', "setup=", "run it"):
        with pytest.raises(AssertionError):
            parse_marker(bad)

