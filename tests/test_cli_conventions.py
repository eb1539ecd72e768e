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
    """EXIT_CODES is the one table: --help and docs/cli.md print it as it is; troubleshooting.md has each status."""
    text = run_wtours(["--help"]).output
    reference = (DOCS / "cli.md").read_text()
    table = (DOCS / "troubleshooting.md").read_text()
    for code, meaning in EXIT_CODES:
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning)}$", text, re.MULTILINE), (code, text)
        assert f"\n| {code} | {meaning} |\n" in reference, f"exit status {code} differs in docs/cli.md"
        assert re.search(rf"^\| {code} \|", table, re.MULTILINE), f"exit status {code} missing in troubleshooting.md"
    documented = re.findall(r"^\| (\d+) \|", reference.split("## Exit status")[1].split("\n## ")[0], re.MULTILINE)
    assert [int(c) for c in documented] == [code for code, _ in EXIT_CODES], "docs/cli.md lists other statuses"


def test_a_bad_option_is_a_usage_error(tmp_path):
    """In a process of its own: the exit status reaches the shell through `python -m wtours`."""
    result = run_wtours_process(["list", "--root", str(tmp_path), "--no-such-option"])
    assert result.returncode == EXIT_USAGE and "No such option" in result.stderr


@pytest.mark.parametrize("args", [["download", "--city", "../etc", "--dry-run"],
                                  ["download", "--url", "http://127.0.0.1:1/x.mp4", "--name", "Bad Name", "--dry-run"],
                                  ["download", "--dry-run"],
                                  ["inspect", "nope"],
                                  ["verify", "no/such/folder"],
                                  ["shard", "--city", "atlantis"],
                                  ["pull", "--repo", "alice/walks", "--city", "Not A Slug"],
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


# ---------------------------------------------------------------- option values: one style, exit status 2


def options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden]


def every_option(kind: type | tuple[type, ...]) -> list[tuple[tuple[str, ...], click.Option]]:
    """(command path, option) for every option of the whole tree whose Click type is a `kind`."""
    return [(path, option) for path, command in walk(cli) for option in options(command)
            if isinstance(option.type, kind)]


def out_of_range(kind: click.IntRange | click.FloatRange) -> list[str]:
    """A value just past each bound of an IntRange/FloatRange (an open bound is itself outside)."""
    def step(bound: float) -> float:  # relative for large float bounds: 1e20 + 0.5 is 1e20 again
        return 1 if isinstance(kind, click.IntRange) else max(0.5, abs(bound) * 1e-3)

    values = []
    if kind.min is not None:
        values.append(kind.min if kind.min_open else kind.min - step(kind.min))
    if kind.max is not None:
        values.append(kind.max if kind.max_open else kind.max + step(kind.max))
    return [str(v) for v in values]


def invoke(path: tuple[str, ...], *args: str):
    """The command in this process, as a user would type it (Click's parsing, WtoursGroup's error handling)."""
    return run_wtours([*path[1:], *args])


def assert_usage_error(result, option: str) -> None:
    assert result.exit_code == EXIT_USAGE, (result.exit_code, result.output)
    assert option in result.output, result.output
    assert "Traceback" not in result.output and not result.crashed, result.output
    assert "error:" in result.output and "hint:" in result.output, result.output  # one style for every bad value


RANGED = [(path, option, value) for path, option in every_option((click.IntRange, click.FloatRange))
          for value in out_of_range(option.type)]


def _id(path: tuple[str, ...], option: click.Option, *rest: str) -> str:
    return " ".join((*path[1:], option.opts[0], *rest))


@pytest.mark.parametrize(("path", "option", "value"), RANGED, ids=[_id(*case) for case in RANGED])
def test_every_ranged_option_refuses_a_value_past_its_bounds_with_a_usage_error(path, option, value):
    """Each option that declares a range (Click's IntRange/FloatRange, or a config field's metadata
    "range", which wtours.config turns into one), given a value just outside it: status 2, naming
    the option, the value and the range, no traceback."""
    result = invoke(path, option.opts[0], value)
    assert_usage_error(result, option.opts[0])
    assert "out of range" in result.output, result.output


def test_the_walk_finds_the_options_it_must_check():
    """The tree walk reaches nested commands and the options derived from config metadata."""
    found = {_id(path, option) for path, option, _ in RANGED}
    for expected in ("train --epochs", "train --teacher-temp", "train --drop-path", "shard --quality", "eval knn --k",
                     "viz --stride", "blur-faces --blur-threshold", "download --max-height", "stats --cut-min",
                     "inspect --batch-size", "push --max-commit-gb", "verify --workers"):
        assert expected in found, expected


def test_every_numeric_option_declares_its_range():
    """An int or float option without a declared range would be checked (if at all) after parsing, in
    the command's own code, where nothing holds it to status 2: every one declares its range."""
    unranged = [_id(path, option) for path, option in every_option((click.types.IntParamType,
                                                                     click.types.FloatParamType))
                if not isinstance(option.type, (click.IntRange, click.FloatRange))]
    assert not unranged, f"numeric options without a range: {', '.join(unranged)}"


CHOICES = every_option(click.Choice)


@pytest.mark.parametrize(("path", "option"), CHOICES, ids=[_id(*case) for case in CHOICES])
def test_every_choice_option_refuses_another_value_with_a_usage_error(path, option):
    result = invoke(path, option.opts[0], "no-such-choice")
    assert_usage_error(result, option.opts[0])


FLOATS = [(path, option, value) for path, option in every_option(click.types.FloatParamType)
          for value in ("nan", "inf", "-inf")]


@pytest.mark.parametrize(("path", "option", "value"), FLOATS, ids=[_id(*case) for case in FLOATS])
def test_every_float_option_refuses_nan_and_infinity(path, option, value):
    result = invoke(path, option.opts[0], value)
    assert_usage_error(result, option.opts[0])


@pytest.mark.parametrize(("setting", "option"), [("teacher_temp=nan", "--teacher-temp"),
                                                  ("model.drop_path=1", "--drop-path"),
                                                  ("epochs=0", "--epochs"),
                                                  ("out_dim=99999999", "--out-dim"),
                                                  ("precision=fp8", "--precision")])
def test_set_and_config_values_are_checked_as_the_options_are(tmp_path, setting, option):
    """--set and --config FILE go through the same validator: status 2 naming the option and the range."""
    key, _, value = setting.partition("=")
    result = invoke(("wtours", "train"), "--shards", "walk", "--out", str(tmp_path / "run"), "--set", setting)
    assert_usage_error(result, option)
    assert "hint:" in result.output
    config = tmp_path / "settings.yaml"
    config.write_text(f"{key.split('.')[-1]}: {'.nan' if value == 'nan' else value}\n")
    result = invoke(("wtours", "train"), "--shards", "walk", "--out", str(tmp_path / "run"), "--config", str(config))
    assert_usage_error(result, option)


# ---------------------------------------------------------------- the validator and the field metadata


def test_a_range_knows_its_open_and_closed_ends_and_refuses_nan_and_infinity():
    from wtours.config import Range

    open_low = Range(0, 1, open_low=True)
    assert 0 not in open_low and 1 in open_low and 0.5 in open_low and 1.5 not in open_low
    assert 0 in Range(0, 1) and 1 not in Range(0, 1, open_high=True)
    for value in (float("nan"), float("inf"), float("-inf")):
        assert value not in Range() and value not in Range(0)
    assert str(Range(1, 1 << 20)) == "in [1, 1048576]" and str(Range(0, open_low=True)) == "> 0"


def test_configs_built_in_code_are_checked_as_the_options_are():
    from wtours.dora.config import DoRAConfig, LossConfig
    from wtours.errors import UsageError
    from wtours.privacy.params import BlurParams
    from wtours.shard.params import ShardParams

    for make, words in [(lambda: ShardParams(quality=0), "--quality 0 is out of range: it must be in [1, 100]"),
                        (lambda: ShardParams(fps=float("nan")), "--fps nan is not a finite number"),
                        (lambda: LossConfig(student_temp=0.0),
                         "--student-temp 0 is out of range: it must be in (0, 10]"),
                        (lambda: DoRAConfig(drop_path=1.0), "--drop-path 1 is out of range: it must be in [0, 1)"),
                        (lambda: BlurParams(mode="smudge"), "--blur-mode 'smudge' is not one of its choices"),
                        (lambda: BlurParams(threshold=1.0),
                         "--blur-threshold 1 is out of range: it must be in (0, 1)")]:
        with pytest.raises(UsageError) as info:
            make()
        assert info.value.exit_code == EXIT_USAGE and info.value.message == words and info.value.hint


def test_the_free_and_path_flags_are_read_from_the_training_fields():
    """What a --resume may change and what a model card cuts to its last part: declared on the fields."""
    from wtours.hub.model_card import path_settings, public_settings
    from wtours.train.folder import changes, free_settings

    assert path_settings() == {"out", "root", "knn_train", "knn_val", "linear_train", "linear_val", "davis",
                               "init_from"}
    assert {"out", "device", "log_every", "precision"} <= free_settings()
    assert not {"workers", "lr", "batch_size", "seed", "out_dim"} & free_settings()  # they shape the run
    assert changes({"device": "cpu", "lr": 0.1, "workers": 2}, {"device": "cuda", "lr": 0.2, "workers": 3}) == {
        "lr": [0.1, 0.2], "workers": [2, 3]}
    assert public_settings({"init_from": "/home/me/dino.pth", "device": "cuda"}) == {
        "init_from": "dino.pth", "device": "cuda"}


def numeric_training_leaves() -> list[tuple[str, str, str]]:
    """(dotted --set key, option, value) for every int and float field of TrainConfig and its nested DoRA and head
    configs, with the values that once got through: NaN, infinities, and numbers too large for any run."""
    from wtours.config import _optional, leaves
    from wtours.train.config import TrainConfig

    cases = []
    for leaf in leaves(TrainConfig):
        kind = _optional(leaf.type)[0]
        if kind in (int, float):
            huge = ("1e300", "-1e300") if kind is float else (str(10**30), str(-(10**30)), "1e11", "1e12")
            cases += [(".".join(leaf.path), leaf.option, value) for value in ("nan", "inf", "-inf", *huge)]
    return cases


NUMERIC_SETTINGS = numeric_training_leaves()


def test_the_training_settings_walk_reaches_the_nested_configs():
    keys = {key for key, _, _ in NUMERIC_SETTINGS}
    assert {"steps", "epochs", "model.out_dim", "model.drop_path", "model.loss.teacher_temp",
            "model.loss.center_momentum", "model.head.hidden_dim", "model.sinkhorn.sinkhorn_epsilon"} <= keys


@pytest.mark.parametrize(("key", "option", "value"), NUMERIC_SETTINGS, ids=[f"{k}={v}" for k, _, v in NUMERIC_SETTINGS])
def test_every_numeric_training_setting_refuses_nan_infinity_and_huge_values(tmp_path, key, option, value):
    """`--set KEY=VALUE` for every numeric training field (nested ones by their dotted path): NaN, +-inf and values
    past any meaningful range (`--set out_dim=1e11` and `steps=1e12` once ended in tracebacks, `student_temp=inf`
    trained at a constant loss) are usage errors, status 2, naming the field, with no traceback."""
    result = invoke(("wtours", "train"), "--shards", "walk", "--out", str(tmp_path / "run"), "--set", f"{key}={value}")
    assert result.exit_code == EXIT_USAGE, (result.exit_code, result.output)
    assert option in result.output or key.split(".")[-1] in result.output, result.output
    assert "Traceback" not in result.output and not result.crashed, result.output
    assert "error:" in result.output and "hint:" in result.output, result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["1e12", str(10**12), "nan"])
def test_steps_on_the_command_line_refuses_huge_values(tmp_path, value):
    result = invoke(("wtours", "train"), "--shards", "walk", "--out", str(tmp_path / "run"), "--steps", value)
    assert_usage_error(result, "--steps")


@pytest.mark.parametrize(("args", "step"), [
    (["shard", "--city", "venice"], "wtours download --city venice"),
    (["stats", "--city", "venice"], "wtours download --city venice"),  # before the detector's weights are read
    (["inspect", "venice"], "wtours shard --city venice"),
    (["train", "--shards", "venice", "--epochs", "1"], "wtours shard --city venice"),
])
def test_a_corpus_video_not_downloaded_or_sharded_exits_1_naming_the_step(tmp_path, args, step):
    """A step left to run (docs/cli.md, "Option values"): exit 1 and a hint naming it; a name that names
    nothing is a usage error (exit 2)."""
    if args[0] == "train":
        args = [*args, "--out", str(tmp_path / "run")]
    result = run_wtours([*args, "--root", str(tmp_path / "root")])
    assert step in assert_clean_error(result, EXIT_FAILURE, kind=WtoursError)
    assert not (tmp_path / "run").exists()


def test_a_spec_that_names_nothing_is_a_usage_error(tmp_path):
    result = run_wtours(["inspect", "no-such-walk", "--root", str(tmp_path)])
    assert "names no video" in assert_clean_error(result, EXIT_USAGE, kind=UsageError)


@pytest.mark.parametrize("args", [
    ["eval", "knn", "CHECKPOINT", "--train", "FOLDER", "--val", "FOLDER", "--k", "3", "--device", "cuda"],
    ["viz", "CHECKPOINT", "--shards", "FOLDER", "--device", "cuda"],
])
def test_cuda_named_on_a_machine_without_one_is_a_usage_error(tmp_path, args):
    """docs/cli.md's examples pass --device cuda: without a GPU that is exit 2 and a hint, before any work."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    checkpoint = tmp_path / "model.pth"
    torch.save({}, checkpoint)
    (tmp_path / "folder").mkdir()
    swaps = {"CHECKPOINT": str(checkpoint), "FOLDER": str(tmp_path / "folder")}
    result = run_wtours([swaps.get(arg, arg) for arg in args])
    assert "no CUDA device is available here" in assert_clean_error(result, EXIT_USAGE, kind=UsageError)
