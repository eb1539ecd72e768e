"""Typed dataclass configs as the single declaration of a command's settings.

The commands with settings of their own (shard, stats, train, download, blur-faces, eval knn, viz) derive their options
from a config here; what is left on a command (paths, names, switches of one invocation, numbers checked by the same
validator through `number_type`) is declared on the command.

A config is a frozen dataclass; nested dataclass fields are sub-configs. Each leaf field is one Click option
(`--kebab-case`, type from the annotation, default and help from the field). The config is built from, in increasing
precedence: the defaults, environment variables named in the metadata, a `--config FILE` (YAML or JSON, nested as
`asdict(config)` or flat by leaf name), `--set key=value` (leaf name or dotted path), and the command line. Every key is
checked (unknown -> the closest names), every value type-checked.

A field is declared as `option(default, help, **metadata)`. Metadata keys: help, range (a `Range`), choices (a tuple,
or a callable returning one), metavar, envvar, option (the option's name where it is not the field's, e.g. "--from" for
`source`), and flags read through `flagged`: free (a training setting that may change on --resume), path (a local path,
never published as it is). One validator, `problem`, checks every value: the Click options' at parse time
(`number_type`), --config and --set in `build` (`check_field`), a library caller's when a config built on `Checked` is
made; a float is never NaN or infinite. A value out of its range or choices is a usage error (exit status 2) naming the
option, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from wtours.errors import UsageError


@dataclass(frozen=True)
class Leaf:
    path: tuple[str, ...]  # field names from the top config down to this field
    field: dataclasses.Field
    type: Any  # the resolved annotation

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def option(self) -> str:
        return option_name(self.field)


def option_name(f: dataclasses.Field) -> str:
    """`--kebab-case` of the field name, or the metadata's "option" where the CLI keeps another name."""
    return f.metadata.get("option") or "--" + f.name.replace("_", "-")


def _is_config(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def leaves(cls: type, prefix: tuple[str, ...] = ()) -> list[Leaf]:
    """Every non-dataclass field of `cls` and of its nested sub-configs, depth first."""
    out: list[Leaf] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if _is_config(kind):
            out += leaves(kind, (*prefix, f.name))
        else:
            out.append(Leaf((*prefix, f.name), f, kind))
    names = [leaf.name for leaf in out]
    repeated = {n for n in names if names.count(n) > 1}
    if repeated and not prefix:  # leaf names are the option names: they must be unique
        raise TypeError(f"{cls.__name__}: leaf field names repeat: {sorted(repeated)}")
    return out


# ---------------------------------------------------------------- allowed values


@dataclass(frozen=True)
class Range:
    """A numeric field's allowed values, declared with the field (metadata "range"): `low`/`high` bound
    it (None: unbounded), `open_low`/`open_high` exclude the bound. NaN and infinity never fit."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return (self.low is None or (value > self.low if self.open_low else value >= self.low)) and \
            (self.high is None or (value < self.high if self.open_high else value <= self.high))

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {low}"
        if self.low is None:
            return f"{'<' if self.open_high else '<='} {high}"
        return f"in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"


def _number(value: float | None) -> str:
    """A bound or a value as typed: whole numbers in full (1048576, not 1.04858e+06)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


AT_LEAST_1 = Range(1)
NOT_NEGATIVE = Range(0)
POSITIVE = Range(0, open_low=True)
FRACTION = Range(0, 1)  # a probability, a score or a momentum: 0..1, both ends allowed
WORKERS = Range(1, 4096)  # processes a command starts at once (decoders, loaders): beyond any machine's cores


def problem(value: Any, allowed: Range | None = None, choices: Any = None) -> str | None:
    """Why `value` does not fit (not finite, out of `allowed`, not among `choices`), or None. A tuple's
    items are checked one by one; None (an optional setting left unset) and switches always fit."""
    if isinstance(value, tuple):
        return next((p for p in (problem(v, allowed, choices) for v in value) if p), None)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    if allowed is not None and value not in allowed:
        return f"{_number(value)} is out of range: it must be {allowed}"
    if choices is not None and value not in _names(choices):
        return f"{value!r} is not one of its choices"
    return None


def _names(choices: Any) -> list[Any]:
    return list(choices() if callable(choices) else choices)


def check_field(f: dataclasses.Field, value: Any) -> Any:
    """`value`, or a UsageError (exit status 2) naming the option, the value and what the field's metadata
    allows (range, choices): the one check behind every --config and --set value and a config's own."""
    option, allowed, choices = option_name(f), f.metadata.get("range"), f.metadata.get("choices")
    why = problem(value, allowed, choices)
    if why is None:
        return value
    if allowed is not None:
        hint = f"pass {option} a value {allowed}; `--help` shows every option's range"
    elif choices is not None and not isinstance(value, float):
        names = [str(c) for c in _names(choices)]
        hint = _did_you_mean(str(value), names, f"choose {', '.join(names)}")
    else:
        hint = f"pass {option} a finite number"
    raise UsageError(f"{option} {why}", hint)


def _did_you_mean(word: str, names: list[str], otherwise: str) -> str:
    """A hint naming up to three of `names` close to `word`, else `otherwise`."""
    close = difflib.get_close_matches(word, names, n=3, cutoff=0.6)
    return f"did you mean {', '.join(map(repr, close))}?" if close else otherwise


def option(default: Any = dataclasses.MISSING, help: str = "", **meta: Any) -> Any:  # noqa: A002 (Click's name)
    """A settings field: its default (none: a required setting), and the metadata (range, choices, ...) this module
    turns into a checked option."""
    return dataclasses.field(default=default, metadata={"help": help, **meta})


class Checked:
    """A config dataclass whose fields are checked when built, as the CLI's are: each within its metadata's range
    and choices, every float finite (a nested config checks itself)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]  # the subclasses are dataclasses
            value = getattr(self, f.name)
            if not dataclasses.is_dataclass(value):
                check_field(f, value)


def flagged(cls: type, flag: str) -> frozenset[str]:
    """Leaf names of `cls` whose metadata sets `flag` (e.g. "free", "path")."""
    return frozenset(leaf.name for leaf in leaves(cls) if leaf.field.metadata.get(flag))


class _CheckedNumber(click.ParamType):
    """A number parsed as Click's INT/FLOAT would, then checked by `problem`: a bad value is Click's
    BadParameter (exit status 2, "Invalid value for '--option'"), stating the range."""

    allowed: Range

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = (click.INT if isinstance(self, click.types.IntParamType) else click.FLOAT).convert(value, param, ctx)
        why = problem(number, self.allowed)
        if why is not None:
            self.fail(why, param, ctx)
        return number


class CheckedInt(_CheckedNumber, click.IntRange):
    pass


class CheckedFloat(_CheckedNumber, click.FloatRange):
    pass


def number_type(kind: type, allowed: Range) -> click.ParamType:
    """The Click type of a numeric option, which always declares its range: Click's IntRange/FloatRange (so `--help`
    shows the range) checked by `problem`, so that a float refuses NaN and infinity too."""
    if kind is int:  # an int field's bounds are whole numbers
        low, high = (None if b is None else int(b) for b in (allowed.low, allowed.high))
        checked: _CheckedNumber = CheckedInt(min=low, max=high, min_open=allowed.open_low, max_open=allowed.open_high)
    else:
        checked = CheckedFloat(min=allowed.low, max=allowed.high, min_open=allowed.open_low, max_open=allowed.open_high)
    checked.allowed = allowed
    return checked


# ---------------------------------------------------------------- types


def _optional(kind: Any) -> tuple[Any, bool]:
    """(T, True) for `T | None`, else (kind, False)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(kind)) == 2:
            return args[0], True
    return kind, False


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "text", Path: "a path"}


def _type_name(kind: Any) -> str:
    base, optional = _optional(kind)
    name = "a list of text" if typing.get_origin(base) is tuple else _NAMES.get(base, str(base))
    return f"{name} or null" if optional else name


_TRUE, _FALSE, _NULL = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}, {"null", "none", "~", ""}


def coerce(value: Any, kind: Any, key: str) -> Any:
    """`value` as type `kind`; text (from --set or a YAML scalar) is parsed; anything else must fit."""
    base, optional = _optional(kind)
    bad = UsageError(f"{key}: {value!r} is not {_type_name(kind)}", f"{key} takes {_type_name(kind)}")
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NULL):
        if optional:
            return None
        raise bad
    if typing.get_origin(base) is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise bad
        return tuple(i.strip() for i in items if i.strip())
    if base is Path:  # before the text parsing below, which lowercases
        if isinstance(value, (str, Path)) and str(value):
            return Path(value)
        raise bad
    if isinstance(value, str) and base is not str:  # text for a number or a switch: parse it
        text = value.strip().lower()
        try:
            if base is bool:
                if text in _TRUE | _FALSE:
                    return text in _TRUE
                raise ValueError(text)
            return base(text)
        except ValueError:
            raise bad from None
    # A value of its own type (from YAML, JSON or a library caller) as it is, an int for a float; a switch is no number.
    if isinstance(value, (int, float) if base is float else base) and isinstance(value, bool) == (base is bool):
        return float(value) if base is float else value
    raise bad


# ---------------------------------------------------------------- building a config


def nest(cls: type, flat: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """{leaf name or dotted path: value} -> a nested dict shaped as `asdict(cls(...))`."""
    paths = {name: leaf.path for leaf in leaves(cls) for name in (leaf.name, ".".join(leaf.path))}
    out: dict[str, Any] = {}
    for key, value in flat.items():
        path = paths.get(key.replace("-", "_"))
        if path is None:
            raise UsageError(f"unknown setting {key!r}{where}",
                             _did_you_mean(key, list(paths), f"known keys: {', '.join(sorted(paths))}"))
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dicts merged, `top` winning."""
    out = dict(base)
    for key, value in top.items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """A `cls` from a nested dict (as `asdict` writes it; flat leaf names placed by `build_dict`): unknown keys
    and ill-typed values are WtoursErrors; missing fields take their defaults."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in build_dict(cls, values, "").items():
        kind = hints[name]
        if _is_config(kind):
            if not isinstance(value, Mapping):
                raise UsageError(f"{name}: expected a mapping of settings, got {value!r}", "")
            kwargs[name] = build(kind, value)
        else:
            kwargs[name] = check_field(fields[name], coerce(value, kind, name))
    missing = [f.option for f in leaves(cls) if f.path[0] not in kwargs and _default(f.field) is dataclasses.MISSING]
    if missing:
        raise UsageError(f"{', '.join(missing)} missing", "pass it as an option or in --config FILE")
    return cls(**kwargs)


def _default(f: dataclasses.Field, missing: Any = dataclasses.MISSING) -> Any:
    """The field's default (its factory's value), or `missing` where it has none."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return missing if f.default is dataclasses.MISSING else f.default


def read_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON mapping of settings (a run folder's config.json reads back as it was written)."""
    import yaml

    kind = "JSON" if Path(path).suffix == ".json" else "YAML"
    text = Path(path).read_text()
    try:
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 (json and yaml raise their own types)
        raise UsageError(f"--config {path}: not valid {kind} ({e})",
                         "fix the file, or write it as `key: value` lines") from e
    if not isinstance(data, dict):
        raise UsageError(f"--config {path} holds no mapping of settings", "write `key: value` lines")
    return data


def as_yaml(config: Any) -> str:
    """A config as nested YAML that `read_file` (--config FILE) reads back to the same config: tuples as lists,
    fields in declaration order."""
    import yaml

    plain = json.loads(json.dumps(dataclasses.asdict(config)))
    return str(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True))


def parse_assignments(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r} is not KEY=VALUE", "e.g. --set teacher_temp=0.07")
        out[key.strip()] = value.strip()
    return out


# ---------------------------------------------------------------- Click


def click_options(cls: type, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None
                  ) -> Callable[[Callable], Callable]:
    """A decorator adding one Click option per leaf field of `cls` (in field order), but those in `skip`,
    or only those in `only`. Each option's `config_path` attribute is its sub-config's path (("model", "loss")
    for model.loss.teacher_temp, () at the top): help can group the options by it."""

    def decorate(func: Callable) -> Callable:
        chosen = [leaf for leaf in leaves(cls) if leaf.name not in skip and (only is None or leaf.name in only)]
        for leaf in reversed(chosen):
            # a switch is always a pair: a --config file's true can be turned off on the command line
            switch = _optional(leaf.type)[0] is bool
            names = [f"{leaf.option}/--no-{leaf.option[2:]}" if switch else leaf.option, leaf.name]
            func = click.option(*names, **_option_kwargs(leaf))(func)
            func.__click_params__[-1].config_path = leaf.path[:-1]  # type: ignore[attr-defined]
        return func

    return decorate


def option_type(cls: type, name: str) -> click.ParamType:
    """The Click type `click_options` gives leaf `name` of `cls` (range and choices included), for an
    option declared by hand because the command's default differs from the library's."""
    leaf = next(leaf for leaf in leaves(cls) if leaf.name == name)
    return _option_kwargs(leaf).get("type", click.BOOL)


def _option_kwargs(leaf: Leaf) -> dict[str, Any]:
    meta = leaf.field.metadata
    base, _ = _optional(leaf.type)
    default = _default(leaf.field, None)
    kwargs: dict[str, Any] = {"help": meta.get("help", ""), "default": default,
                              "show_default": default not in (None, ()), "show_envvar": "envvar" in meta}
    choices = meta.get("choices")
    if choices is not None:
        kwargs["type"] = click.Choice(_names(choices))
    elif typing.get_origin(base) is tuple:
        kwargs["multiple"], kwargs["type"] = True, str
    elif base in (int, float):
        kwargs["type"] = number_type(base, meta["range"])
    elif base is not bool:
        kwargs["type"] = base
    kwargs.update({key: meta[key] for key in ("metavar", "envvar") if key in meta})
    return kwargs


def from_command(cls: type, ctx, values: Mapping[str, Any], config_file: str | None,
                 assignments: tuple[str, ...], base: Mapping[str, Any] | None = None) -> Any:
    """The config of a Click command built with `click_options(cls)`: defaults < `base` (nested, e.g. a
    resumed run's settings) < environment < --config FILE < --set KEY=VALUE < options on the command line."""
    return build(cls, merge(dict(base or {}), command_settings(cls, ctx, values, config_file, assignments)))


def command_settings(cls: type, ctx, values: Mapping[str, Any], config_file: str | None,
                     assignments: tuple[str, ...]) -> dict[str, Any]:
    """What the command was given (environment, --config, --set, command line), nested, without the
    defaults and not yet type-checked: the settings a user chose, as opposed to those left as they were."""
    from click.core import ParameterSource

    names = {leaf.name for leaf in leaves(cls)}

    def options_from(source: ParameterSource) -> dict[str, Any]:
        return nest(cls, {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
                          if k in names and ctx.get_parameter_source(k) is source})

    layers = options_from(ParameterSource.ENVIRONMENT)
    if config_file:
        layers = merge(layers, build_dict(cls, read_file(config_file), f" in --config {config_file}"))
    layers = merge(layers, nest(cls, parse_assignments(assignments), " in --set"))
    return merge(layers, options_from(ParameterSource.COMMANDLINE))


def build_dict(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Settings (nested, or flat by leaf name) checked against `cls` and nested as `asdict` writes them: unknown
    keys fail here (`where`: " in --config FILE"); values are checked by `build`."""
    fields = {f.name for f in dataclasses.fields(cls)}
    flat = {k: v for k, v in data.items() if k not in fields}
    nested = {k: v for k, v in data.items() if k in fields}
    for name, kind in typing.get_type_hints(cls).items():
        if name in nested and _is_config(kind) and isinstance(nested[name], Mapping):
            nested[name] = build_dict(kind, nested[name], where)
    return merge(nest(cls, flat, where), nested)
