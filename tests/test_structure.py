"""The code's shape: no private module of the libraries whose releases wtours cannot control (huggingface_hub,
yt-dlp, torch) is imported, and the leaf modules that own byte streams, the Hub client and redaction import
no higher layer of wtours."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WATCHED = ("huggingface_hub", "yt_dlp", "torch")  # a release may change their private parts without notice
# Leaf modules and the only wtours modules each may import.
LEAVES = {
    "wtours/redact.py": set(),
    "wtours/hfclient.py": {"wtours.errors", "wtours.redact"},
    "wtours/streams.py": {"wtours.errors", "wtours.layout", "wtours.hfclient", "wtours.redact"},
}


def imported(source: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of each module and name a source imports: `import a.b`, `from a.b import c`
    (as a.b.c), `importlib.import_module("a.b")` and `__import__("a.b")` with a literal name."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and _callee(node.func) in ("import_module", "__import__"):
            yield node.lineno, node.args[0].value


def _callee(func: ast.expr) -> str | None:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def private_imports(source: str) -> list[str]:
    """The imports of a private part of a WATCHED package: a dotted component after the package's name
    that starts with '_' (huggingface_hub.utils._http, torch._C, `from torch.utils.data import _utils`)."""
    found = []
    for line, name in imported(source):
        package, *rest = name.split(".")
        if package in WATCHED and any(part.startswith("_") for part in rest):
            found.append(f"{line}: {name}")
    return found


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


@pytest.mark.parametrize(("source", "flagged"), [
    ("from huggingface_hub.utils import _http", ["1: huggingface_hub.utils._http"]),
    ("import huggingface_hub.utils._http as h", ["1: huggingface_hub.utils._http"]),
    ("from torch.utils.data._utils import collate", ["1: torch.utils.data._utils.collate"]),
    ("import torch._C", ["1: torch._C"]),
    ("import importlib\nimportlib.import_module('yt_dlp.utils._utils')", ["2: yt_dlp.utils._utils"]),
    ("from yt_dlp.options import _hide_login_info", ["1: yt_dlp.options._hide_login_info"]),
    ("from huggingface_hub.utils import logging\nimport torch.nn.functional as F\nfrom yt_dlp import parse_options",
     []),
    ("from wtours._private import x\nfrom . import _sibling", []),  # only the watched packages
])
def test_the_detector_flags_private_imports_and_only_those(source, flagged):
    assert private_imports(source) == flagged


def test_no_private_module_of_huggingface_hub_yt_dlp_or_torch_is_imported():
    found = {str(path.relative_to(REPO)): hits for path in python_files("wtours", "cli")
             if (hits := private_imports(path.read_text(encoding="utf-8")))}
    assert found == {}, ("private modules imported (use the library's public API): "
                         + "; ".join(f"{path}:{hit}" for path, hits in found.items() for hit in hits))


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_the_leaf_modules_import_no_higher_layer(leaf):
    names = {name for _, name in imported((REPO / leaf).read_text(encoding="utf-8")) if name.startswith("wtours")}
    modules = {name if name in LEAVES[leaf] else name.rsplit(".", 1)[0] for name in names}
    assert modules <= LEAVES[leaf], f"{leaf} imports {sorted(modules - LEAVES[leaf])}"


def test_nothing_reads_bytes_or_redacts_through_the_clip_loader():
    """Byte streams, hf:// URLs and redaction have one owner each (wtours.streams, wtours.redact): the
    publishing and statistics layers do not import the clip loader for them, nor the loader the publishing layer."""
    def imports_of(folder: str, prefix: str) -> list[str]:
        return [f"{path.relative_to(REPO)}:{line}: {name}" for path in python_files(folder)
                for line, name in imported(path.read_text(encoding="utf-8")) if name.startswith(prefix)]

    assert imports_of("wtours/hub", "wtours.clips") == []
    assert imports_of("wtours/stats", "wtours.clips") == []
    assert imports_of("wtours/clips", "wtours.hub") == []
