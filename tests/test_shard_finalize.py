"""`wtours shard --finalize` finishes a set with its own settings (its plan), and a rerun of a finished set says
it is complete instead of "0 frames in 0 shards"."""

from __future__ import annotations

from tests.cli import assert_clean_error, run_wtours
from tests.videos import make_video
from wtours.errors import EXIT_USAGE, UsageError
from wtours.fetch.local import add_local
from wtours.layout import Layout

SETTINGS = ["--fps", "1", "--short-side", "96", "--samples-per-shard", "3", "--quality", "80"]


def test_finalize_reads_the_settings_from_the_plan_and_a_rerun_says_complete(tmp_path):
    layout = Layout(tmp_path / "root")
    add_local(make_video(tmp_path / "walk.mp4", seconds=6.0, size="160x120", rate=10), "walk", layout.root,
              mode="symlink", say=lambda m: None)
    base = ["shard", "--city", "walk", "--root", str(layout.root), "--workers", "1", "-q"]
    refused = run_wtours([*base, "--finalize"])
    assert_clean_error(refused, EXIT_USAGE, "nothing to finalize", kind=UsageError)
    for rank in ("0", "1"):
        result = run_wtours([*base, *SETTINGS, "--num-nodes", "2", "--node-rank", rank])
        assert result.exit_code == 0, result.output
    index = layout.index_path("walk")
    written = index.read_bytes()
    index.unlink()  # as when the last node was killed before writing it

    finalized = run_wtours([*base, "--finalize"])  # no settings repeated
    assert finalized.exit_code == 0, finalized.output
    assert index.read_bytes() == written
    assert finalized.stdout.strip() == "walk: complete, nothing left to decode: 6 frames in 2 shards, " \
        f"{sum(p.stat().st_size for p in layout.shard_files('walk')) / 1e6:.1f} MB, 0 blank dropped"

    rerun = run_wtours([*base, *SETTINGS])
    assert rerun.exit_code == 0 and "complete, nothing left to decode: 6 frames in 2 shards" in rerun.stdout
    assert "0 frames in 0 shards" not in rerun.stdout
    other = run_wtours([*base, "--finalize", "--fps", "2"])  # a setting given that the set was not made with
    assert other.exit_code != 0 and "fps 1.0 -> 2.0" in other.stderr, other.stderr
