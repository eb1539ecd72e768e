"""A data root read as users write it, with the real libraries, offline: Hugging Face `datasets` over several sets
in any order and over the root's own card (`load_dataset(<root>/shards[, SLUG])`), wids reading local shards in
place, and the per-frame statistics joined to the samples by key (`wtours inspect --where`)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import assert_clean_error, run_wtours
from tests.test_card import corpus_and_own_root
from wtours.layout import Layout
from wtours.shard.card import LOCAL_MARK, card_mark
from wtours.shard.read import iter_shard
from wtours.shard.writer import write_shard


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A corpus video (venice: its YouTube id is each sample's `source_id`) and an own video (my-walk: no id, so
    `source_id` is ""), each sharded by `shard_video`, which also writes the root's card."""
    return corpus_and_own_root(tmp_path_factory.mktemp("local-loading"))


@pytest.fixture
def root(built, tmp_path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "root", symlinks=True))


def shard_samples(layout: Layout, slug: str) -> dict[str, dict]:
    """Every sample's json by key, read by wtours' own reader."""
    return {s.key: dataclasses.asdict(s.meta) for path in layout.shard_files(slug) for s in iter_shard(path)}


# ---------------------------------------------------------------------- datasets


DATASETS_SCRIPT = """
import glob, json, sys
from datasets import load_dataset

def rows(*args, **kwargs):
    try:  # a cache per root: `datasets` would take the copy's files (same names and times) for the original's
        table = load_dataset(*args, split="train", cache_dir=f"{shards}-cache", **kwargs)
    except Exception as e:
        return f"{type(e).__name__}: {e} {e.__cause__}"
    return {"rows": len(table), "ids": sorted({(r["video"], r["source_id"]) for r in table["json"]}, key=str),
            "keys": sorted(table.column_names), "first": table[0]["__key__"]}

report = {}
for shards in sys.argv[1:]:
    a, b = (sorted(glob.glob(f"{shards}/{slug}/*.tar")) for slug in ("venice", "my-walk"))
    report[shards] = {"venice first": rows("webdataset", data_files=a + b),
                      "my-walk first": rows("webdataset", data_files=b + a), "root": rows(shards),
                      "venice": rows(shards, "venice"), "my-walk": rows(shards, "my-walk")}
print(json.dumps(report))
"""


@pytest.mark.slow  # `datasets` takes seconds to import and prepare
def test_datasets_loads_sets_in_either_order_and_the_root_by_its_card(root, tmp_path):
    """The `webdataset` builder over two sets, in both orders, and the root's card (every set, or one set by
    name), offline. The same root with my-walk's shard as version 3 wrote it (`source_id` null) fails the first
    form in one order, as it did, while the card's declared features still load it."""
    layout = Layout(root)
    old = Layout(shutil.copytree(root, tmp_path / "old", symlinks=True))
    shard = old.shard_file("my-walk", "my-walk-000000.tar")
    samples = list(iter_shard(shard))
    write_shard(shard, (dataclasses.replace(s, meta=dataclasses.replace(s.meta, source_id=None))  # type: ignore[arg-type]
                        for s in samples))
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", DATASETS_SCRIPT, str(layout.shards_base()), str(old.shards_base())],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)

    venice_id = load_source_id(layout)
    both = [["my-walk", ""], ["venice", venice_id]]
    columns = ["__key__", "__url__", "jpg", "json"]
    new = report[str(layout.shards_base())]
    for name in ("venice first", "my-walk first", "root"):
        assert isinstance(new[name], dict), (name, new[name])
        assert (new[name]["rows"], new[name]["ids"], new[name]["keys"]) == (10, both, columns), name
    assert new["venice first"]["first"] == "venice-00000000" and new["my-walk first"]["first"] == "my-walk-00000000"
    assert (new["venice"]["rows"], new["venice"]["ids"]) == (6, [["venice", venice_id]])
    assert (new["my-walk"]["rows"], new["my-walk"]["ids"]) == (4, [["my-walk", ""]])

    before = report[str(old.shards_base())]
    assert "Couldn't cast array of type string to null" in before["my-walk first"]  # the failure fixed
    assert before["root"]["ids"] == [["my-walk", None], ["venice", venice_id]]  # declared: still loads


def load_source_id(layout: Layout) -> str:
    (sample, *_), = [list(shard_samples(layout, "venice").values())]
    assert isinstance(sample["source_id"], str) and sample["source_id"]
    return sample["source_id"]


def test_the_roots_card_lists_every_set_and_leaves_a_readme_of_the_users_own(root):
    layout = Layout(root)
    card = layout.shards_card_path()
    assert card_mark(card) == LOCAL_MARK
    front = card.read_text().split("---\n")[1]
    assert "config_name: my-walk" in front and "config_name: venice" in front and "licen" not in front

    card.write_text("# my own notes\n")
    rerun = run_wtours(["shard", "--city", "venice", "--fps", "2", "--short-side", "128", "--samples-per-shard", "4",
                        "--root", str(root), "--workers", "1"])
    assert rerun.returncode == 0, rerun.stderr
    assert card.read_text() == "# my own notes\n" and "left as is" in rerun.stdout + rerun.stderr

    refused = run_wtours(["card", "--local", "--root", str(root)])
    assert_clean_error(refused, 2, "not a dataset card written by wtours")
    assert card.read_text() == "# my own notes\n"
    done = run_wtours(["card", "--local", "--root", str(root), "--overwrite"])
    assert done.returncode == 0, done.stderr
    assert card_mark(card) == LOCAL_MARK and "load_dataset(" in done.stdout

    assert_clean_error(run_wtours(["card", "--local", "--city", "venice", "--root", str(root)]), 2, "--local takes no")
    assert_clean_error(run_wtours(["card", "--all", "--root", str(root)]), 2, "missing --repo and --out")


# ---------------------------------------------------------------------- wids


def test_wids_reads_local_shards_in_place_with_localname(root, tmp_path, monkeypatch):
    """The documented form (docs/data-format.md): `localname` maps each shard URL (a path resolved against the
    descriptor's folder) to itself, so wids opens the shards where they are. Without it, wids copies every shard
    it reads into its cache ($WIDS_CACHE)."""
    import wids

    layout = Layout(root)
    cache = tmp_path / "wids-cache"
    monkeypatch.setenv("WIDS_CACHE", str(cache))
    opened: list[str] = []

    def in_place(url: str) -> str:
        opened.append(url)
        return url

    before = {p: p.stat().st_mtime_ns for p in layout.shard_dir("venice").iterdir()}
    frames = wids.ShardListDataset(str(layout.wids_path("venice")), localname=in_place)
    expected = shard_samples(layout, "venice")
    got = {frames[i]["__key__"]: frames[i][".json"] for i in range(len(frames))}
    assert got == expected and len(got) == 6
    assert sorted(set(opened)) == [str(p) for p in layout.shard_files("venice")]
    assert not cache.exists()  # nothing copied
    assert {p: p.stat().st_mtime_ns for p in layout.shard_dir("venice").iterdir()} == before  # nothing written

    copied = wids.ShardListDataset(str(layout.wids_path("venice")))  # the default: a copy in the cache
    assert copied[0]["__key__"] == "venice-00000000" and len(list(cache.iterdir())) >= 1


# ---------------------------------------------------------------------- frames.parquet by key


def test_frames_parquet_joins_the_samples_and_inspect_where_filters_them(root):
    """Every row's key is its sample's; the faces a blurred set's index counts per sample come with it (here
    counts written into the index, as `--blur-faces` records them); --where picks rows by any column."""
    import pandas as pd

    layout = Layout(root)
    index = json.loads(layout.index_path("venice").read_text())
    counts = iter([0, 2, 0, 1, 0, 3])
    for entry in index["shards"]:
        entry["faces"] = [next(counts) for _ in range(entry["samples"])]
    layout.index_path("venice").write_text(json.dumps(index))
    faces = dict(zip(shard_samples(layout, "venice"), [f for e in index["shards"] for f in e["faces"]]))
    stats = run_wtours(["stats", "--city", "venice", "--no-classes", "-q", "--root", str(root)])
    assert stats.returncode == 0, stats.stderr
    frames = pd.read_parquet(layout.stats_dir("venice") / "frames.parquet")
    samples = shard_samples(layout, "venice")
    assert list(frames.columns[:2]) == ["__key__", "video"] and set(frames["video"]) == {"venice"}
    assert list(frames["__key__"]) == list(samples)  # one row per sample, in order
    joined = frames.merge(pd.DataFrame.from_dict(samples, orient="index"), left_on="__key__", right_index=True,
                          suffixes=("", "_sample"), validate="one_to_one")
    assert (joined["frame"] == joined["frame_sample"]).all() and (joined["t"] == joined["t_sample"]).all()
    assert dict(zip(frames["__key__"], frames["faces"])) == faces
    with_faces = run_wtours(["inspect", "venice", "--root", str(root), "--clip-frames", "2", "--json",
                             "--where", "faces > 0"])
    assert json.loads(with_faces.stdout)["where"]["videos"]["venice"]["keys"] == [k for k, n in faces.items() if n]

    threshold = float(frames["lightness"].median())
    expected = [k for k, light in zip(frames["__key__"], frames["lightness"]) if light > threshold]
    where = run_wtours(["inspect", "venice", "--root", str(root), "--clip-frames", "2", "--json",
                        "--where", f"lightness > {threshold!r} and shot == 0"])
    assert where.returncode == 0, where.stderr
    chosen = json.loads(where.stdout)["where"]["videos"]["venice"]
    assert chosen == {"frames": 6, "matching": len(expected), "keys": expected} and 0 < len(expected) < 6
    text = run_wtours(["inspect", "venice", "--root", str(root), "--clip-frames", "2", "--where", "`__key__` == "
                       "'venice-00000005'"])
    assert "where `__key__` == 'venice-00000005': venice: 1 of 6 analysed frames" in text.stdout

    for expression, message in [("lightnes > 30", "no such column"), ("lightness >", "not a condition"),
                                ("lightness * 2", "not true or false per frame"), ("@threshold > 1", "not allowed")]:
        failed = run_wtours(["inspect", "venice", "--root", str(root), "--clip-frames", "2", "--where", expression])
        assert_clean_error(failed, 2, message)
        assert "lightness_p50" in failed.stderr and "`__key__`" in failed.stderr  # the columns, listed
    missing = run_wtours(["inspect", "my-walk", "--root", str(root), "--clip-frames", "2", "--where", "cut"])
    assert_clean_error(missing, 2, "no per-frame statistics")
    assert "wtours stats --city my-walk" in missing.stderr
