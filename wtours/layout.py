"""The on-disk contract: data root, per-video folders, names and keys (docs/data-format.md).

Every path of the data root, every shard name and sample key, and the files of a training run's folder are named here
and nowhere else. A command's own report files (the statistics' tables and plots, viz pictures, an export folder's
files) are named by the module that writes them, beside its other output."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from wtours.errors import UsageError, WtoursError

ROOT_ENV = "WTOURS_ROOT"
# Anchored with \Z, not $: `$` also matches before a trailing newline, so "venice\n" would pass a .match().
SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
SHARD_NAME_PATTERN = re.compile(r"^(?P<slug>[a-z0-9][a-z0-9-]*)-(?P<number>\d{6})\.tar\Z")
# `scheme://...` (s3://, hf://, http://, file://): a URL, which a data root or --out never is
URL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
ROOT_URL_HINT = ("the data root is a local folder. To fetch shard sets from the Hugging Face Hub use "
                 "`wtours pull --repo OWNER/NAME`, to publish them `wtours push`; to read shards from a URL pass it "
                 "to --shards; for object storage (s3://, gs://) mount it (e.g. s3fs, rclone mount) and pass the "
                 "mount point")
INFO_FILE = "info.json"
INDEX_FILE = "index.json"
PLAN_FILE = "plan.json"
SEGMENTS_DIR = "_segments"
NODES_DIR = "_nodes"
WIDS_SUFFIX = ".wids.json"
SOURCE_FILE = "source.json"
DATASET_CARD_FILE = "README.md"  # a dataset card: <root>/shards/README.md here, a Hub repo's README.md there
BLUR_SOURCE_FILE = "blurred_from.json"  # in a `wtours blur-faces` output: the set it was blurred from
PULLED_FROM = "pulled_from"  # source.json's record of the Hub repo and revision `wtours pull` fetched a set from
STATS_SUMMARY_FILE = "summary.json"
STATS_PARTS_DIR = "_parts"
# A training run's folder (`wtours train --out`): what a run writes, and nothing else.
CHECKPOINT_FILE = "checkpoint.pth"
RUN_LOG_FILE = "log.jsonl"
RUN_CONFIG_FILE = "config.json"
RUN_FACTS_FILE = "run.json"
EXPORT_WEIGHTS_FILE = "model.safetensors"  # a `wtours export --format timm` folder's weights (timm's name)
RUN_CURVES_FILE = "loss.png"  # log.jsonl drawn: the loss and the evaluations during training (wtours/train/curves.py)
RUN_FILES = (CHECKPOINT_FILE, RUN_LOG_FILE, RUN_CONFIG_FILE, RUN_FACTS_FILE, RUN_CURVES_FILE)
RUN_DATA_LOG_PREFIX = "data.rank"  # data.rank<r>.jsonl: each rank's clip keys of every step
RUN_DATA_LOG_GLOB = RUN_DATA_LOG_PREFIX + "*.jsonl"
RUN_TENSORBOARD_DIR = "tensorboard"
# The figures of the evaluations during training (wtours/train/monitor.py), each its own log.jsonl line as
# <name>_<figure> (knn_top1), with <name>_error where one failed; the model card reports them (wtours/hub/export.py).
RUN_LOG_FIGURES = {"knn": ("top1", "top5"), "linear": ("top1", "top5", "epochs"),
                   "davis": ("jf", "j", "f", "sequences")}
TEMPORARY_GLOB = ".*.tmp-*"  # what `replace_atomically` leaves behind when the process is killed mid-write

T = TypeVar("T")


def is_url(text: str) -> bool:
    return bool(URL_PATTERN.match(text))


def run_data_log(rank: int) -> str:
    return f"{RUN_DATA_LOG_PREFIX}{rank}.jsonl"


def validate_slug(name: str) -> str:
    """A video's name is a folder and a shard-name prefix: never a path, never a dot."""
    if not isinstance(name, str) or not SLUG_PATTERN.match(name):
        raise UsageError(f"{name!r} is not a valid video name", "use lowercase ASCII letters, digits and '-', "
                         "starting with a letter or digit (at most 63 characters), e.g. 'my-walk'")
    return name


class Layout:
    """Paths under one data root, per `docs/data-format.md`: the only code that knows folder and file names."""

    def __init__(self, root: str | os.PathLike | None = None):
        """`root`, else `$WTOURS_ROOT`, else the per-user data folder (`$XDG_DATA_HOME/wtours`)."""
        if root or os.environ.get(ROOT_ENV):
            self.root = Path(root or os.environ[ROOT_ENV]).expanduser()
        else:
            xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
            self.root = Path(xdg) / "wtours"
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"the data root {self.root} is a file, not a folder",
                              f"pass a folder (or a path that does not exist yet) as --root or ${ROOT_ENV}")

    # ---- videos
    def video_dir(self, slug: str) -> Path:
        return self.root / "videos" / validate_slug(slug)

    def info_path(self, slug: str) -> Path:
        return self.video_dir(slug) / INFO_FILE

    def video_file(self, slug: str, file_name: str) -> Path:
        """The video file info.json names: a plain name inside the video's folder, never a path."""
        if not file_name or Path(file_name).name != file_name or file_name in (".", ".."):
            raise WtoursError(f"{self.info_path(slug)} names {file_name!r}, not a file in {self.video_dir(slug)}",
                              f"register the video again with `wtours add FILE --name {slug}`")
        return self.video_dir(slug) / file_name

    def video_path(self, slug: str, ext: str) -> Path:
        """Where a video's file goes, `<slug>.<ext>` in its folder: yt-dlp writes it (`ext`: its template field
        `%(ext)s`), `wtours add` places it (`ext`: the file's own, lowercased; mp4 when it has none)."""
        return self.video_dir(slug) / f"{slug}.{ext}"

    @staticmethod
    def rejected_path(video: Path) -> Path:
        """Where a downloaded body that failed verification is kept for inspection, never under its name."""
        return video.with_name(video.name + ".invalid")

    def video_slugs(self) -> list[str]:
        """Slugs with a folder under videos/ (downloaded, partly downloaded or added)."""
        return _slug_folders(self.root / "videos")

    # ---- shards
    def names_set(self, spec: str) -> bool:
        """Whether a command's SPEC names the shard set of that name under the root, rather than a path: it does
        when shaped like a video name (SLUG_PATTERN: no '/', no '.'), whatever the current folder holds. A folder
        of that name here is not used: a line on stderr says so, and that `./NAME` names it."""
        if not SLUG_PATTERN.match(spec):
            return False
        here, ours = Path(spec), self.shard_dir(spec)
        if here.is_dir() and not (ours.is_dir() and ours.samefile(here)):
            print(f"note: {spec!r} is the shard set {spec} under the data root ({ours}), not the folder ./{spec} "
                  f"here: pass ./{spec} for that folder", file=sys.stderr)
        return True

    def shards_base(self) -> Path:
        return self.root / "shards"

    def shards_card_path(self) -> Path:
        """The data root's own dataset card: what lets `datasets.load_dataset(<root>/shards)` read the sets."""
        return self.shards_base() / DATASET_CARD_FILE

    def shard_dir(self, slug: str) -> Path:
        return self.shards_base() / validate_slug(slug)

    def sharded_slugs(self) -> list[str]:
        """Slugs with a folder under shards/ (sharded here or pulled from the Hub)."""
        return _slug_folders(self.shards_base())

    def indexed_slugs(self) -> list[str]:
        """The complete shard sets under shards/: those with an index.json."""
        return [slug for slug in self.sharded_slugs() if self.index_path(slug).is_file()]

    def shard_path(self, slug: str, number: int) -> Path:
        return self.shard_dir(slug) / shard_name(slug, number)

    def shard_file(self, slug: str, name: str) -> Path:
        """The local path of a shard named in an index or a listing (checked: never a path of its own)."""
        return self.shard_dir(slug) / validate_shard_name(name, slug)

    def shard_files(self, slug: str) -> list[Path]:
        return sorted(self.shard_dir(slug).glob(f"{slug}-*.tar"))

    def index_path(self, slug: str) -> Path:
        return self.shard_dir(slug) / INDEX_FILE

    def wids_path(self, slug: str) -> Path:
        return self.shard_dir(slug) / f"{slug}{WIDS_SUFFIX}"

    def plan_path(self, slug: str) -> Path:
        return self.shard_dir(slug) / PLAN_FILE

    def source_path(self, slug: str) -> Path:
        """Provenance of a set pulled from the Hub (docs/hub.md)."""
        return self.shard_dir(slug) / SOURCE_FILE

    def segments_dir(self, slug: str) -> Path:
        return self.shard_dir(slug) / SEGMENTS_DIR

    def node_lock_dir(self, slug: str, rank: int) -> Path:
        """Holds the lock of one rank of a multi-node `wtours shard` (ranks share the shard folder)."""
        return self.shard_dir(slug) / NODES_DIR / str(int(rank))

    def segment_record_path(self, slug: str, number: int) -> Path:
        return self.segments_dir(slug) / f"{slug}-{number:06d}.json"

    # ---- statistics
    def stats_base(self, out: str | os.PathLike | None = None) -> Path:
        """The folder holding one folder per video and the corpus tables: `out`, else <root>/stats."""
        base = Path(out) if out is not None else self.root / "stats"
        if base.exists() and not base.is_dir():
            raise UsageError(f"the statistics folder {base} is a file, not a folder",
                              "pass a folder (or a path that does not exist yet) as --out")
        return base

    def stats_dir(self, slug: str, out: str | os.PathLike | None = None) -> Path:
        return self.stats_base(out) / validate_slug(slug)

    def stats_summary_path(self, slug: str) -> Path:
        return self.stats_dir(slug) / STATS_SUMMARY_FILE

    def stats_summary_paths(self, out: str | os.PathLike | None = None) -> list[Path]:
        return sorted(self.stats_base(out).glob(f"*/{STATS_SUMMARY_FILE}"))

    # ---- demo
    def demo_video_path(self) -> Path:
        return self.root / "inputs" / "synthetic-walk.mp4"

    def demo_run_dir(self) -> Path:
        return self.root / "runs" / "demo"


def _slug_folders(base: Path) -> list[str]:
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and SLUG_PATTERN.match(p.name))


def shard_name(slug: str, number: int) -> str:
    return f"{slug}-{number:06d}.tar"


def validate_shard_name(name: str, slug: str | None = None) -> str:
    """A shard name from outside (a remote index or listing) before any path is built from it:
    `<slug>-<number:06d>.tar`, of this set's slug, never a path (`../x.tar` is refused)."""
    match = SHARD_NAME_PATTERN.fullmatch(name) if isinstance(name, str) else None  # not `match`: `$` allows a "\n"
    if match is None or (slug is not None and match.group("slug") != slug):
        expected = f"{slug}-NNNNNN.tar" if slug else "<slug>-NNNNNN.tar"
        raise WtoursError(f"{name!r} is not a shard name of this set (expected {expected})",
                          "the index or listing is damaged or hostile: re-push or reshard the set; nothing was written")
    return name


def shard_number(name: str) -> int:
    """`<slug>-<number:06d>.tar` -> number (the name checked first)."""
    return int(validate_shard_name(name)[-10:-4])


def sample_key(slug: str, frame: int) -> str:
    """`<slug>-<frame:08d>`: no dots, since WebDataset splits keys at the first dot."""
    return f"{slug}-{frame:08d}"


def read_json(path: Path) -> Any | None:
    """The parsed file, None when it does not exist; invalid JSON is a WtoursError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WtoursError(f"{path} is not valid JSON ({e})", "delete it and rerun the command that writes it") from e


def replace_atomically(path: Path, write: Callable[[Path], T]) -> T:
    """The one atomic write: `write` fills a temporary name in the same folder, which is fsynced and
    renamed into place, then the folder is fsynced (so the rename survives a power cut). A killed or
    failed write never leaves a partial file under the final name, and the temporary is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # host, pid and a random token: nodes sharing a folder may have equal pids (containers)
    tmp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        result = write(tmp)
        _fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_path(path.parent)
    return result


def remove_stale_temporaries(folder: Path, owned: Callable[[str], bool] = lambda name: True) -> list[Path]:
    """Temporaries (`TEMPORARY_GLOB`) left in `folder` by runs that died mid-write, of the files whose name
    is `owned` (a folder may hold the user's files too). Call only under the folder's lock, where no live
    run can be writing them; they would otherwise keep a full disk full."""
    removed = []
    for path in folder.glob(TEMPORARY_GLOB) if folder.is_dir() else ():
        if owned(path.name[1:].split(".tmp-")[0]):  # .NAME.tmp-HOST-PID-TOKEN
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    replace_atomically(path, lambda tmp: tmp.write_bytes(data))


def json_bytes(data: Any) -> bytes:
    """Indented, key order kept, UTF-8, ending in a newline: the same data always gives the same bytes."""
    return (json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode("utf-8")


def write_json_atomic(path: Path, data: Any) -> None:
    write_bytes_atomic(path, json_bytes(data))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
