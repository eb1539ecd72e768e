"""The small concerns with one owner each: typed records read from JSON (wtours/records.py), durations and
sizes as text, run merging, a file's sha256, stale temporaries, --device, and the loader's problem counts."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import pytest
import torch

from wtours.clips.stages import Problems
from wtours.errors import UsageError, WtoursError
from wtours.layout import remove_stale_temporaries, sha256_file, write_bytes_atomic
from wtours.records import is_number, read_record
from wtours.shard.plan import merge_runs
from wtours.system import resolve_device
from wtours.units import format_duration, format_size


@dataclass(frozen=True)
class Inner:
    name: str
    weight: float | None = None


@dataclass(frozen=True)
class Outer:
    count: int
    ratio: float
    flag: bool
    pairs: tuple[tuple[int, int], ...]
    inner: Inner
    items: list[Inner] = field(default_factory=list)
    note: str | None = None
    extra: dict[str, int] = field(default_factory=dict)


GOOD = {"count": 3, "ratio": 2, "flag": True, "pairs": [[0, 1], [4, 5]], "inner": {"name": "a"},
        "items": [{"name": "b", "weight": 0.5}], "extra": {"x": 1}}


def test_a_record_is_built_with_json_lists_as_declared_tuples_and_values_of_their_json_type():
    record = read_record(Outer, GOOD, "f.json", "hint")
    assert record == Outer(3, 2, True, ((0, 1), (4, 5)), Inner("a"), [Inner("b", 0.5)], None, {"x": 1})
    assert type(record.ratio) is int  # an int stays an int: written back, the same bytes


@pytest.mark.parametrize("change, message", [
    ({"count": True}, "count is a boolean, not an integer"),
    ({"count": 1.5}, "count is a number, not an integer"),
    ({"ratio": False}, "ratio is a boolean, not a number"),
    ({"ratio": math.nan}, "ratio is nan, not a finite number"),
    ({"ratio": math.inf}, "ratio is inf, not a finite number"),
    ({"flag": 1}, "flag is an integer, not a boolean"),
    ({"pairs": [[0, 1, 2]]}, "pairs[0] has 3 items, not 2"),
    ({"pairs": [[0, "1"]]}, "pairs[0][1] is a string, not an integer"),
    ({"inner": []}, "inner is a list, not an object"),
    ({"inner": {}}, "inner.name is missing"),
    ({"items": [{"name": "b", "weight": "heavy"}]}, "items[0].weight is a string, not a number"),
    ({"note": 7}, "note is an integer, not a string"),
    ({"extra": {"x": None}}, "extra.x is null, not an integer"),
])
def test_a_wrong_value_names_the_file_and_the_key(change, message):
    with pytest.raises(WtoursError) as error:
        read_record(Outer, {**GOOD, **change}, "f.json", "fix it")
    assert error.value.message == f"f.json: {message}" and error.value.hint == "fix it"


def test_missing_fields_and_ignored_unknown_keys():
    with pytest.raises(WtoursError, match="f.json: count is missing"):
        read_record(Outer, {k: v for k, v in GOOD.items() if k != "count"}, "f.json", "")
    assert read_record(Outer, {**GOOD, "later": 1}, "f.json", "").count == 3  # ignored
    with pytest.raises(WtoursError, match="f.json: it is a list, not an object"):
        read_record(Outer, [GOOD], "f.json", "")


def test_a_number_is_never_a_bool():
    assert is_number(1) and is_number(1.5) and is_number(3, int)
    assert not is_number(True) and not is_number(False, int) and not is_number("1") and not is_number(1.5, int)


def test_durations_and_sizes_read_as_people_read_them():
    assert format_duration(3725) == "1:02:05" and format_duration(8) == "0:00:08"
    assert format_duration(45, always_hours=False) == "0:45" and format_duration(3725, always_hours=False) == "1:02:05"
    assert [format_size(n) for n in (0, 999, 1500, 2_500_000, 3 * 10**15)] == [
        "0 B", "999 B", "1.5 KB", "2.5 MB", "3000.0 TB"]


def test_runs_are_merged_within_the_gap():
    assert merge_runs([(c, c) for c in (0, 1, 2, 5, 6, 9)], gap=1) == [(0, 2), (5, 6), (9, 9)]
    assert merge_runs([(4.0, 5.0), (0.0, 1.0), (1.5, 2.0)], gap=0.5) == [(0.0, 2.0), (4.0, 5.0)]
    assert merge_runs([(0.0, 3.0), (1.0, 2.0)], gap=0.1) == [(0.0, 3.0)]  # a run inside another
    assert merge_runs([], gap=1) == []


def test_sha256_of_a_file_and_stale_temporaries(tmp_path):
    data = b"x" * (9 << 20)  # more than one read block
    write_bytes_atomic(tmp_path / "a.bin", data)
    assert sha256_file(tmp_path / "a.bin") == hashlib.sha256(data).hexdigest()
    mine, theirs = tmp_path / ".log.jsonl.tmp-host-1-ab", tmp_path / ".notes.txt.tmp-host-1-cd"
    mine.write_text("torn")
    theirs.write_text("torn")
    assert remove_stale_temporaries(tmp_path, lambda name: name == "log.jsonl") == [mine]
    assert not mine.exists() and theirs.exists()
    assert remove_stale_temporaries(tmp_path) == [theirs] and not theirs.exists()
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_device_names_resolve_or_fail_as_usage_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    found = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto") == found
    with pytest.raises(UsageError, match="--device tpu0: not a device name"):
        resolve_device("tpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="--device cuda:1: no CUDA device is available here"):
            resolve_device("cuda:1")


def test_problem_counts_cross_processes_as_plain_data():
    worker, total = Problems(), Problems()
    worker.shard_failed("s-000001.tar", OSError("gone"))
    worker.bad_samples += 2
    total.shard_failed("s-000001.tar", OSError("first"))
    total.add(worker.counts())
    total.add(None)
    assert total.counts() == {"bad_shards": {"s-000001.tar": "OSError: first"}, "bad_samples": 2, "bad_clips": 0}
