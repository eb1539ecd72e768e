"""Every sample read from another machine is checked against index.json (version 3: a sha256 per sample), for
reads of part of a shard too: a slot starting mid-shard, `--clips-per-shard`, the epoch's padding and `viz`.
Servers that lie for real (tests/http_server.py's and tests/hub_server.py's `lie`): a shard replaced with the
same layout, a Range answered from another offset (saying so, or not), a server that ignores Range and sends
the whole (replaced) file, other bytes at the right offset. None of their samples is used, the shard is named
and counted, and once it failed a check no later read of this process touches it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.http_server import LIES, FileServer
from wtours.clips.epoch import ClipConfig, ShardRead, plan_epoch
from wtours.clips.pipeline import ClipDataset, LoaderConfig, make_loader
from wtours.clips.spec import resolve
from wtours.clips.stages import Problems, open_shards, tar_samples
from wtours.shard.read import iter_shard
from wtours.streams import FAILED_SHARDS
from wtours.viz.run import pick_starts, read_clips

BAD = "walk-000001.tar"  # the shard a lying server changes: every sample from BAD_FROM on
BAD_FROM = 2
CLIP = ClipConfig(frames=2, clips_per_shard=5, seed=3)


@pytest.fixture(scope="module")
def clean(canonical_roots, tmp_path_factory) -> Path:
    """walk-20s's shard folder: index.json (version 3) and 4 shards of 10 samples (a rank's piece of an epoch
    holds two shards, so a rank that loses one still fills its batches)."""
    return canonical_roots.copy("walk-20s", tmp_path_factory.mktemp("verified") / "root") / "shards" / "walk"


def replaced_copy(clean: Path, folder: Path, samples: range) -> Path:
    """`folder` holding BAD with the same layout (every tar header and size kept) but one byte changed inside
    the JPEG of each of `samples`: a replaced shard no size check can tell."""
    entry = next(e for e in json.loads((clean / "index.json").read_text())["shards"] if e["name"] == BAD)
    data = bytearray((clean / BAD).read_bytes())
    for i in samples:
        data[entry["offsets"][i] + 512 + 200] ^= 0xFF  # 200 bytes into the sample's first member, its .jpg
    folder.mkdir(exist_ok=True)
    (folder / BAD).write_bytes(bytes(data))
    return folder


@pytest.fixture(scope="module")
def other(clean, tmp_path_factory) -> Path:
    return replaced_copy(clean, tmp_path_factory.mktemp("other"), range(BAD_FROM, 10))


@pytest.fixture(scope="module")
def originals(clean) -> set[bytes]:
    return {s.jpg for path in sorted(clean.glob("*.tar")) for s in iter_shard(path)}


def mid_shard_read(refs) -> tuple[list[bytes], Problems]:
    """A slot that starts mid-shard: samples 3.. of BAD."""
    problems = Problems()
    ref = next(r for r in refs if r.url.endswith(BAD))
    return [s.jpg for s in tar_samples(open_shards([ShardRead(ref, frozenset(), 3)], problems), problems)], problems


def epoch_read(refs, ranks: int = 2, epochs: int = 2, workers: int = 0,
               clip: ClipConfig = CLIP) -> tuple[list[bytes], list[list[str]], Problems]:
    """Every rank's batches of `epochs` epochs with --clips-per-shard (a part of each shard) and padding."""
    jpgs, keys, problems = [], [], Problems()
    config = LoaderConfig(batch_size=4, workers=workers, augment="gpu", clip=clip)
    for epoch in range(epochs):
        for rank in range(ranks):
            dataset = ClipDataset(refs, config, rank, ranks)
            dataset.set_epoch(epoch)
            for batch in make_loader(dataset):
                jpgs += [bytes(t.numpy()) for t in batch.jpgs]
                keys.append(batch.keys)
            problems.add(dataset.problems.counts())
    return jpgs, keys, problems


def viz_read(refs) -> tuple[list[bytes], str | None]:
    """viz's clips (parts of shards), and the shards it could not read (viz names them in its error)."""
    problems = Problems()
    jpgs = [jpg for clip in read_clips(refs, pick_starts(refs, CLIP, 8), CLIP, problems) for jpg in clip.jpgs]
    return jpgs, ", ".join(problems.bad_shards) or None


def test_the_epochs_read_parts_of_shards_and_pad_from_the_lying_shard(clean):
    """What the reads below exercise: parts of shards (not whole ones) and padding reads of BAD."""
    refs = resolve(str(clean))
    plans = [plan_epoch(refs, CLIP, epoch, 2, 1, 4) for epoch in range(2)]
    reads = [r for plan in plans for slot in range(2) for r in plan.reads(slot)]
    assert any(r.first_sample > 0 or r.stop_sample is not None for r in reads)
    padding = [r for plan in plans for s in plan.slots for r in plan._reads(s.padding)]
    assert any(r.ref.entry.name == BAD for r in padding)


@pytest.mark.parametrize("lie", LIES)
def test_no_read_of_part_of_a_shard_uses_a_sample_a_lying_server_changed(clean, other, originals, lie, caplog):
    with FileServer(clean, lie=lie, other=other) as server:
        refs = resolve(server.url("index.json"))
        jpgs, problems = mid_shard_read(refs)
        assert jpgs == [] and list(problems.bad_shards) == [server.url(BAD)]
        FAILED_SHARDS.clear()  # each kind of read on its own: it must find the fault itself
        jpgs, keys, problems = epoch_read(refs)
        assert set(jpgs) <= originals and keys and all(len(k) == 4 for k in keys)
        assert list(problems.bad_shards) == [server.url(BAD)], problems.bad_shards
        FAILED_SHARDS.clear()
        jpgs, error = viz_read(refs)
        assert set(jpgs) <= originals and jpgs and error is not None and BAD in error
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "skipping unreadable shard" in said and BAD in said
    assert ("asked for bytes from" if lie == "shifted" else "sha256 is not the one its index.json records") in said


def test_a_shard_that_failed_a_check_is_never_read_again_in_this_process(clean, tmp_path, originals):
    """Only sample 5 differs, and only in answers to Range requests: a part [4, 8) uses sample 4 and stops at 5;
    after that, reads of its clean samples (another slot, the padding, a whole read) do not touch it either,
    and a worker's report (`Problems.add`) makes the failure this process's too."""
    other = replaced_copy(clean, tmp_path / "other", range(5, 6))
    with FileServer(clean, lie="other-bytes", other=other) as server:
        ref = next(r for r in resolve(server.url("index.json")) if r.url.endswith(BAD))

        def part(first: int, stop: int | None) -> tuple[int, Problems]:
            problems = Problems()
            read = ShardRead(ref, frozenset(), first, stop)
            return len(list(tar_samples(open_shards([read], problems), problems))), problems

        used, problems = part(4, None)
        assert used == 1 and "sample 5's sha256" in problems.bad_shards[ref.url]
        before = len(server.requests)
        for first, stop in ((0, 3), (0, None), (6, None)):
            used, problems = part(first, stop)
            assert used == 0 and "not read again, it failed a check earlier" in problems.bad_shards[ref.url]
        assert len(server.requests) == before  # not even asked for
        FAILED_SHARDS.clear()  # a new process: the clean samples read
        assert part(0, 3)[0] == 3
        Problems().add({"bad_shards": {ref.url: problems.bad_shards[ref.url]}, "bad_samples": 0, "bad_clips": 0})
        assert part(0, 3)[0] == 0  # a worker's failure, reported with its batch, holds in this process too
        FAILED_SHARDS.clear()
        refs = resolve(server.url("index.json"))
        jpgs, _, problems = epoch_read(refs, ranks=1, epochs=1, workers=2)  # real DataLoader workers
        assert set(jpgs) <= originals and list(problems.bad_shards) == [ref.url]
        assert ref.url in FAILED_SHARDS  # learnt from the workers' batches
        before = len(server.requests)
        jpgs, _, problems = epoch_read(refs, ranks=1, epochs=1, workers=2)  # the next epoch's workers
        assert set(jpgs) <= originals and not [r for r in server.requests[before:] if r["path"].endswith(BAD)]


def test_a_clean_set_reads_the_same_over_http_whatever_the_server_does_with_range(clean):
    every = ClipConfig(frames=2, stride=1.5)  # (--clips-per-shard draws by URL) parts of shards, padding
    refs = resolve(str(clean))
    expected = epoch_read(refs, ranks=3, clip=every)
    mid = mid_shard_read(refs)[0]
    for lie in (None, "ignores-range"):
        with FileServer(clean, lie=lie) as server:
            remote = resolve(server.url("walk-{000000..000003}.tar"))
            jpgs, keys, problems = epoch_read(remote, ranks=3, clip=every)
            assert (jpgs, keys) == expected[:2] and not problems.bad_shards and not problems.bad_samples
            assert mid_shard_read(remote)[0] == mid
            ranges = {r["range"] is not None for r in server.body_requests() if r["path"].endswith(".tar")}
            assert True in ranges  # parts of shards were asked for with Range requests


def test_a_version_2_set_reads_as_before_and_warns_once_about_unverified_parts(clean, other, tmp_path, caplog):
    """Without per-sample sha256 a part read from a server is not checked (the warning says so, once per set,
    with the reshard hint); a whole shard still is, against its sha256."""
    served = tmp_path / "v2"
    shutil.copytree(clean, served)
    index = json.loads((clean / "index.json").read_text())
    for shard in index["shards"]:
        del shard["sample_sha256"]
    (served / "index.json").write_text(json.dumps({**index, "version": 2}))
    local = mid_shard_read(resolve(str(clean)))[0]
    with FileServer(served) as server:
        refs = resolve(server.url("index.json"))
        assert mid_shard_read(refs)[0] == local and mid_shard_read(refs)[0] == local
        epoch_read(refs, ranks=1, epochs=1)
    warnings = [r.getMessage() for r in caplog.records if "records no sha256 per sample" in r.getMessage()]
    assert len(warnings) == 1 and "wtours shard --overwrite" in warnings[0]
    with FileServer(served, lie="replaced", other=other) as server:
        problems = Problems()
        whole = resolve(server.url(BAD))
        assert list(tar_samples(open_shards(whole, problems), problems)) == []
        assert "sha256 is not the one" in problems.bad_shards[whole[0].url]


HUB_SCRIPT = """
import json, sys
from tests.test_verified_reads import epoch_read, mid_shard_read, viz_read
from wtours.clips.spec import resolve
from wtours.streams import FAILED_SHARDS
refs = resolve(sys.argv[1])
report = {}
for name, read in (("mid", mid_shard_read), ("epoch", epoch_read), ("viz", viz_read)):
    FAILED_SHARDS.clear()
    out = read(refs)
    report[name] = {"jpgs": [j.hex() for j in out[0]], "problem": str(out[-1].bad_shards if name != "viz" else out[-1])}
print(json.dumps(report))
"""


@pytest.mark.slow
@pytest.mark.usefixtures("no_xet")
@pytest.mark.parametrize("lie", ["replaced", "ignores-range", "other-bytes", "shifted"])
def test_hf_reads_of_parts_use_no_sample_a_lying_hub_changed(clean, other, originals, lie, tmp_path):
    """The same over hf:// (huggingface_hub's buffered file, Range requests of 4 MiB): a shard replaced on the
    Hub with the same layout, and a Hub that ignores Range, shifts it or answers it with other bytes."""
    from huggingface_hub import HfApi

    from tests.hub_server import HubServer

    token = "hf_bob_v3rified"
    with HubServer({token: "bob"}) as hub:
        api = HfApi(endpoint=hub.url, token=token)
        api.create_repo("bob/walks", repo_type="dataset")
        api.upload_folder(folder_path=str(clean), path_in_repo="walk", repo_id="bob/walks", repo_type="dataset")
        if lie == "replaced":
            api.upload_file(path_or_fileobj=str(other / BAD), path_in_repo=f"walk/{BAD}", repo_id="bob/walks",
                            repo_type="dataset")
        else:
            hub.lie(f"walk/{BAD}", lie, (other / BAD).read_bytes())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "WTOURS_"))}
        env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf"), HF_TOKEN=token)
        result = subprocess.run([sys.executable, "-c", HUB_SCRIPT, "hf://datasets/bob/walks/walk/index.json"],
                                env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    for name, read in json.loads(result.stdout).items():
        assert {bytes.fromhex(j) for j in read["jpgs"]} <= originals, name
        assert BAD in read["problem"], (name, read["problem"])
        assert name == "viz" or "sha256 is not the one its index.json records" in read["problem"], read["problem"]
    assert token not in result.stdout + result.stderr


def test_verify_checks_each_samples_sha256(clean, tmp_path):
    """`wtours verify` checks what remote readers will check: an index whose sample_sha256 does not match
    its shard (whole size and sha256 right) names the shard and the sample, exit 1."""
    from tests.cli import run_wtours

    root = tmp_path / "root"
    shutil.copytree(clean.parent.parent, root, symlinks=True)
    assert run_wtours(["verify", "walk", "--root", str(root)]).exit_code == 0
    index = json.loads((root / "shards" / "walk" / "index.json").read_text())
    index["shards"][1]["sample_sha256"][3] = "0" * 64
    (root / "shards" / "walk" / "index.json").write_text(json.dumps(index))
    result = run_wtours(["verify", "walk", "--root", str(root)])
    assert result.exit_code == 1 and f"{BAD}: sample 3's bytes are not the ones its sample_sha256" in result.output
