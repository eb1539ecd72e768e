"""Picking a video's analysed frames by a condition on frames.parquet's columns (`wtours inspect --where`): the
shard samples they stand for, by key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wtours.errors import UsageError
from wtours.layout import Layout
from wtours.stats.report import FRAMES_FILE
from wtours.stats.summary import KEY_COLUMN


@dataclass(frozen=True)
class Selection:
    """The frames of one video that meet a condition."""

    slug: str
    frames: int  # analysed frames (rows of frames.parquet)
    keys: tuple[str, ...]  # the sample key of each frame that meets it, in time order


def select_frames(layout: Layout, slug: str, expression: str) -> Selection:
    """The frames of `slug`'s frames.parquet (under <root>/stats) for which `expression`, a
    pandas expression over its columns (`lightness > 30 and not cut`, `` `__key__` ``), is true."""
    path = layout.stats_dir(slug) / FRAMES_FILE
    if not path.is_file():
        raise UsageError(f"{slug} has no per-frame statistics ({path}), which --where filters",
                         f"run `wtours stats --city {slug}` first (add --no-classes to skip the detector)")
    import pandas as pd

    frames = pd.read_parquet(path)
    if KEY_COLUMN not in frames:
        raise UsageError(f"{path} predates the `{KEY_COLUMN}` column that joins a row to its sample",
                         f"run `wtours stats --city {slug}` again: it rebuilds the table from its saved parts at once")
    mask = evaluate(frames, expression, path)
    return Selection(slug, len(frames), tuple(frames.loc[mask, KEY_COLUMN]))


def evaluate(frames: Any, expression: str, where: Path) -> Any:
    """`expression` on the table as a boolean column; what cannot be one is a UsageError listing the columns."""
    from pandas.errors import UndefinedVariableError

    columns = ", ".join(f"`{c}`" if not c.isidentifier() or c.startswith("_") else c for c in frames.columns)
    hint = (f"write a condition on the columns of {where.name} ({columns}), e.g. 'lightness > 30 and shot == 2'; "
            "backquote a name that starts with _ (`__key__`); see docs/stats.md")
    if "@" in expression or ".__" in expression:  # pandas' local variables and dunder attributes: no way out
        raise UsageError(f"--where {expression!r}: '@' and '.__' are not allowed", hint)
    try:
        result = frames.eval(expression, engine="python")
    except UndefinedVariableError as e:
        raise UsageError(f"--where {expression!r}: {e} (no such column)", hint) from None
    except (SyntaxError, ValueError, TypeError, KeyError, AttributeError, NotImplementedError) as e:
        raise UsageError(f"--where {expression!r} is not a condition on the frames ({type(e).__name__}: {e})",
                         hint) from None
    from pandas.api.types import is_bool_dtype

    if not (is_bool_dtype(getattr(result, "dtype", None)) and len(result) == len(frames)):
        raise UsageError(f"--where {expression!r} gives {getattr(result, 'dtype', type(result).__name__)}, "
                         "not true or false per frame", hint)
    return result
