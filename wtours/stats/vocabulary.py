"""The class names an open-vocabulary detector is asked for: LVIS v1's 1,203 categories (shipped in
vocabularies/lvis_v1.txt with their source and licence) or a user's file, one name per line."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from wtours.errors import WtoursError

LVIS_FILE = Path(__file__).parent / "vocabularies" / "lvis_v1.txt"
LVIS_NAME = "LVIS v1"
MAX_NAME_CHARS = 200  # a query is cut to the text model's 16 tokens anyway: a longer line is a wrong file
MAX_CLASSES = 100_000  # each name is one text embedding held for the whole run


@dataclass(frozen=True)
class Vocabulary:
    """Class names in file order, the score threshold of each (None: the run's --score-threshold) and
    what identifies the list in summary.json: its name and the sha256 of the file's bytes."""

    name: str
    classes: tuple[str, ...]
    thresholds: tuple[float | None, ...]
    sha256: str

    def threshold_of(self, default: float) -> list[float]:
        """The score threshold of every class: its own, else `default`."""
        return [default if own is None else own for own in self.thresholds]

    @property
    def label(self) -> str:
        return f"{self.name} ({len(self.classes)} classes)"


def read_vocabulary(path: Path | None) -> Vocabulary:
    """The vocabulary in `path` (None: LVIS v1). One class name per line, optionally followed by a tab and
    that class's score threshold (0..1); blank lines and lines starting with # are skipped."""
    file = LVIS_FILE if path is None else path
    try:
        data = file.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise WtoursError(f"cannot read the vocabulary file {file} ({e})",
                          "pass --vocabulary a UTF-8 text file with one class name per line") from e
    names: list[str] = []
    seen: set[str] = set()
    thresholds: list[float | None] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, threshold = _parse(line, number, file)
        if name in seen:
            raise WtoursError(f"{file}, line {number}: the class {name!r} is listed twice",
                              "list each class once: its detections would be counted under one name anyway")
        names.append(name)
        seen.add(name)
        thresholds.append(threshold)
    if not names:
        raise WtoursError(f"the vocabulary file {file} lists no class names",
                          "write one class name per line (lines starting with # are comments)")
    if len(names) > MAX_CLASSES:
        raise WtoursError(f"the vocabulary file {file} lists {len(names)} classes, more than {MAX_CLASSES}",
                          "split it into smaller vocabularies")
    label = LVIS_NAME if path is None else file.name
    return Vocabulary(label, tuple(names), tuple(thresholds), hashlib.sha256(data).hexdigest())


def _parse(line: str, number: int, file: Path) -> tuple[str, float | None]:
    name, _, threshold = line.partition("\t")
    name = " ".join(name.split())  # runs of spaces are one space: the same query
    where = f"{file}, line {number}"
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise WtoursError(f"{where}: not a class name ({name[:40]!r}...)",
                          f"one printable name of at most {MAX_NAME_CHARS} characters per line")
    if not threshold.strip():
        return name, None
    try:
        value = float(threshold)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise WtoursError(f"{where}: the threshold {threshold.strip()!r} of {name!r} is not a score in 0..1",
                          "write the name, a tab and a number from 0 to 1, or the name alone for --score-threshold")
    return name, value


def query_text(name: str) -> str:
    """The text the detector embeds for a class name: LVIS writes words with underscores (`trash_can`,
    `bat_(animal)`); the text model reads them as words."""
    return name.replace("_", " ")
