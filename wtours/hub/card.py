"""The dataset card (README.md with YAML metadata): licence and attribution of every video, how the
frames were sampled, privacy and limitations, what each video holds, how to load it, and how to cite
the paper. Deterministic: the same sets give the same bytes, so an unchanged card is never committed
again. `wtours push` uploads it; `wtours card` writes the same card to a local file (`write_card`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wtours.citation import ARXIV_ID, ARXIV_URL, PAPER_TITLE, PAPER_VENUE, PAPER_YEAR, citation_section
from wtours.errors import UsageError
from wtours.hub.paths import CARD_FILE, REPO_TYPE, shard_pattern, shard_spec
from wtours.layout import INDEX_FILE, SOURCE_FILE, WIDS_SUFFIX, Layout, write_bytes_atomic
from wtours.manifest import load_manifest
from wtours.shard.card import GENERATED_MARKS, HUB_MARK, card_mark, dataset_configs, dataset_info
from wtours.shard.index import ShardIndex
from wtours.streams import DEFAULT_REVISION, validate_repo_id, validate_revision
from wtours.units import format_duration, format_size

CARD_LICENSE = "cc-by-4.0"  # when every video is CC BY; otherwise "other", and each video's own licence rules
MIXED_LICENSE_NAME = "per-video-licences"
# Any licence text that adds a condition to attribution: CC BY's derivatives may be CC BY 4.0, these may not.
_CONDITIONS = re.compile(r"\b(nc|nd|sa|non-?commercial|no-?deriv\w*|share-?alike)\b")
_CC_BY = re.compile(r"^(cc[- ]?by|creative commons attribution)\b")
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
CITE = (f"These shards are made for DoRA and the Walking Tours corpus, from the paper\n[{PAPER_TITLE}]({ARXIV_URL}) "
        f"({PAPER_VENUE}, {PAPER_YEAR}). If you use them, please cite it:")


@dataclass(frozen=True)
class CardVideo:
    slug: str
    index: ShardIndex
    source: dict[str, Any]  # its provenance record (wtours/hub/source.py)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.index.shards)


def is_generated(text: str) -> bool:
    """A README this tool wrote (and may rewrite); any other is the owner's and left alone."""
    return any(mark in text for mark in GENERATED_MARKS)


def render_card(repo: str, videos: list[CardVideo], endpoint: str, revision: str = DEFAULT_REVISION) -> str:
    validate_repo_id(repo)  # both are written into the card's code blocks
    validate_revision(revision)
    videos = sorted(videos, key=lambda v: v.slug)
    sections = [_front_matter(videos), HUB_MARK, _intro(repo, videos), _attribution(videos),
                _sampling(videos), _privacy(videos), _contents(videos), _layout(videos),
                _loading(repo, videos, endpoint, revision), citation_section(CITE)]
    return "\n\n".join(s.strip("\n") for s in sections) + "\n"


def local_card(layout: Layout, slugs: list[str], repo: str, revision: str = DEFAULT_REVISION) -> str:
    """The card `wtours push` would write for these local sets alone. Contacts nothing: the endpoint in
    the loading instructions is huggingface_hub's setting (HF_ENDPOINT, else huggingface.co)."""
    from wtours.hfclient import default_endpoint
    from wtours.hub.source import read_local_set

    validate_repo_id(repo)  # before any set is read: the cheaper mistakes first
    validate_revision(revision)
    sets = [read_local_set(layout, slug) for slug in dict.fromkeys(slugs)]
    videos = [CardVideo(s.slug, s.index, s.record) for s in sets]
    return render_card(repo, videos, default_endpoint(), revision)


def write_card(path: Path, text: str, overwrite: bool = False) -> None:
    """Write the card atomically; a file there that is not a card of ours is replaced only with `overwrite`."""
    if path.is_dir():
        raise UsageError(f"{path} is a folder", f"pass the card's file name, e.g. --out {path / CARD_FILE}")
    if path.exists() and not overwrite:
        if card_mark(path) is None:
            raise UsageError(f"{path} exists and is not a dataset card written by wtours; it was left as is",
                             "pass another --out, or --overwrite to replace it")
    write_bytes_atomic(path, text.encode("utf-8"))


def is_cc_by(licence: str | None) -> bool:
    """CC BY of any version, as recorded ("CC-BY", "CC-BY-4.0", YouTube's "Creative Commons Attribution
    license (reuse allowed)"); CC BY-SA/NC/ND, other licences and none are not."""
    text = (licence or "").strip().lower()
    return bool(_CC_BY.match(text)) and not _CONDITIONS.search(text)


def other_licences(videos: list[CardVideo]) -> list[CardVideo]:
    """The videos whose recorded licence is not plain CC BY: the card cannot then say CC BY 4.0 for all."""
    return [v for v in videos if not is_cc_by((v.source.get("source") or {}).get("license"))]


def _front_matter(videos: list[CardVideo]) -> str:
    from huggingface_hub import DatasetCardData

    frames = sum(v.index.samples for v in videos)
    configs = dataset_configs([v.slug for v in videos])
    info = dataset_info(configs)
    licence: dict[str, Any] = ({"license": CARD_LICENSE} if not other_licences(videos)
                               else {"license": "other", "license_name": MIXED_LICENSE_NAME})
    data = DatasetCardData(
        **licence, pretty_name="Walking Tours frames (wtours shards)",
        task_categories=["image-feature-extraction"],
        size_categories=[next((name for limit, name in SIZE_CATEGORIES if frames < limit), "n>1T")],
        tags=["webdataset", "video", "self-supervised-learning", "walking-tours", "dora", f"arxiv:{ARXIV_ID}"],
        configs=configs, dataset_info=info)
    return f"---\n{data.to_yaml()}\n---"


def _intro(repo: str, videos: list[CardVideo]) -> str:
    manifest = load_manifest()
    frames = sum(v.index.samples for v in videos)
    shards = sum(len(v.index.shards) for v in videos)
    corpus = [v.slug for v in videos if manifest.get(v.slug)]
    origin = (f"\n\nThe videos {', '.join(f'`{s}`' for s in corpus)} are from {manifest.title}: {manifest.paper}"
              if corpus else "")
    return f"""# {repo}

Frames sampled from {len(videos)} video{'s' if len(videos) != 1 else ''}, stored as time-ordered
[WebDataset](https://github.com/webdataset/webdataset) shards made with wtours (`wtours shard`):
{frames:,} frames in {shards} shards, {format_size(sum(v.bytes for v in videos))}.{origin}"""


def _attribution(videos: list[CardVideo]) -> str:
    rows = []
    for v in videos:
        s = v.source.get("source") or {}
        rows.append(f"| `{v.slug}` | {_cell(s.get('title') or v.source.get('city') or '')} | {_creator(s)} | "
                    f"<{s.get('url')}> | {_cell(s.get('license'))} |")
    others = other_licences(videos)
    if not others:
        terms = """This dataset is released under the [Creative Commons Attribution 4.0](https://creativecommons.org/licenses/by/4.0/)
licence (CC BY 4.0). Its frames are derived from the videos below, each published by its creator under
the Creative Commons Attribution licence shown; the changes made are sampling, scaling and JPEG encoding
(below). When you use or share these frames, credit each video's creator and link its source, as the
licence requires:"""
    else:
        named = ", ".join(f"`{v.slug}`" for v in others)
        terms = f"""This dataset has **no single licence**: the frames of each video below carry the licence of that
video, as recorded when it was added (the last column). {named} {'is' if len(others) == 1 else 'are'} not under
plain CC BY: read {'its' if len(others) == 1 else 'their'} licence before you use, share or adapt those frames. The
changes made are sampling, scaling and JPEG encoding (below). Credit each video's creator and link its
source:"""
    return f"""## Licence and attribution

{terms}

| video | title | creator | source | licence of the source |
|---|---|---|---|---|
""" + "\n".join(rows)


def _sampling(videos: list[CardVideo]) -> str:
    rows = []
    for v in videos:
        p = v.index.params
        end = "the end" if p.end is None else f"{p.end:g} s"
        rows.append(f"| `{v.slug}` | {p.fps:g} | {p.short_side} px | {p.quality} | {p.samples_per_shard} "
                    f"({p.samples_per_shard / p.fps:g} s) | {p.blank_threshold:g} | {p.start:g} s to {end} |")
    return """## How the frames were sampled

Each video was decoded once with ffmpeg on a grid of `fps` cells per second: a cell's sample is the first
frame whose timestamp falls in it. Frames are scaled so their short side is `short side` pixels (aspect
kept, never upscaled, area filter) and stored as JPEG at `quality`. Blank frames (luma standard deviation
under `blank threshold` on a 0-255 scale: black, white, frozen single colour) are dropped and counted.
Shard N holds the cells of one stretch of time, so consecutive shards continue each other.

| video | fps | short side | JPEG quality | samples per shard | blank threshold | span |
|---|---|---|---|---|---|---|
""" + "\n".join(rows)


def _privacy(videos: list[CardVideo]) -> str:
    """What is hidden in each video (the index's `privacy` block, docs/privacy.md) and what is not."""
    rows = []
    for v in videos:
        p = v.index.privacy
        licence = _cell((v.source.get("source") or {}).get("license") or "")
        rows.append(f"| `{v.slug}` | yes ({p['mode']}) | {p['detector']} at {p['threshold']:g} | {p['faces']:,} | "
                    f"{p['frames_with_faces']:,} | {licence} |" if p else f"| `{v.slug}` | **no** | | | | {licence} |")
    detectors = sorted({p["detector"] for v in videos if (p := v.index.privacy)})
    plates = ("" if not detectors else f" (here: {', '.join(f'`{d}`' for d in detectors)})")
    return f"""## Privacy and limitations

The videos are walks filmed in public places: the frames show **bystanders' faces** and **vehicles' number
plates**, and may show shop signs, screens and house numbers.

- **Faces.** Where `blurred` says yes, each stored frame went through the face detector named and every face
  it found was hidden before the frame was encoded (`wtours shard --blur-faces`); the counts are the faces
  hidden. A detector misses some faces, small and turned-away ones above all (with wtours' defaults, faces
  under about 12 px tall in the stored frame), so treat blurred frames as reduced, not zero, risk. Where it
  says **no**, frames are stored as decoded and faces are recognisable.
- **Number plates** and other text are hidden only by a detector made for them; a face detector{plates}
  leaves them readable.
- Do not use these frames to identify, track or profile people. If you appear in a frame and want it removed,
  ask the owner of this repository.
- **Licences.** Each video's licence is the one recorded with it: the source page's for a downloaded video,
  what the publisher stated with `wtours add --license` for a video added from disk (below and in the
  attribution table). The frames carry the creator's licence terms, so check them before reuse, and credit
  the creator.
- **Limitations.** Each video is one long walk filmed by one camera, sampled densely: consecutive frames
  are highly correlated, and the places, seasons, times of day and people shown are few and not
  representative of the world. Frames have no labels.

| video | blurred | detector | faces hidden | frames with faces | licence of the source |
|---|---|---|---|---|---|
""" + "\n".join(rows)


def _contents(videos: list[CardVideo]) -> str:
    rows = []
    for v in videos:
        index, video = v.index, v.index.video
        stopped = "" if index.complete else f" (decoded to {index.decoded_until or 0:.0f} s)"
        rows.append(f"| `{v.slug}` | {format_duration(video.duration)}{stopped} | {video.width}x{video.height} @ "
                    f"{video.fps:.2f} fps | {index.samples:,} | {index.dropped.get('blank', 0):,} | "
                    f"{len(index.shards)} | {format_size(v.bytes)} |")
    total = (f"| **total** | | | {sum(v.index.samples for v in videos):,} | "
             f"{sum(v.index.dropped.get('blank', 0) for v in videos):,} | "
             f"{sum(len(v.index.shards) for v in videos)} | {format_size(sum(v.bytes for v in videos))} |")
    return """## Contents

| video | duration | source video | frames | blank frames dropped | shards | size |
|---|---|---|---|---|---|---|
""" + "\n".join(rows + [total])


def _layout(videos: list[CardVideo]) -> str:
    slug = videos[0].slug if videos else "venice"
    return f"""## Layout

    {CARD_FILE}
    <video>/<video>-NNNNNN.tar   shards (e.g. {slug}/{slug}-000000.tar)
    <video>/{INDEX_FILE}           per shard: name, samples, bytes, sha256, time span, cell runs; the parameters
    <video>/{SOURCE_FILE}          the video's source, creator and licence
    <video>/<video>{WIDS_SUFFIX}    the shard list for wids (shard URLs relative to it)

Each sample is one frame: `<video>-<frame:08d>.jpg` and `<video>-<frame:08d>.json`, the json holding
`frame` (index in the source video), `t` (seconds from its start), `width`, `height`, `video` and
`source_id`. Within a shard, samples are in time order."""


def _loading(repo: str, videos: list[CardVideo], endpoint: str, revision: str) -> str:
    slug, names = (videos[0].slug, [s.name for s in videos[0].index.shards]) if videos else ("venice", [])
    pattern = shard_pattern(slug, names) or f"{slug}/{slug}-000000.tar"
    base = f"{endpoint.rstrip('/')}/datasets/{repo}/resolve/{revision}"
    spec = shard_spec(repo, slug, names, revision)
    rev = "" if revision == DEFAULT_REVISION else f", revision=\"{revision}\""
    rev_flag = "" if revision == DEFAULT_REVISION else f" --revision {revision}"
    return f"""## How to load it

With [webdataset](https://github.com/webdataset/webdataset), streaming over HTTP (a private repo needs your
token: `"pipe:curl -s -L -H 'Authorization: Bearer <token>' " + url`):

```python
import webdataset as wds

dataset = wds.WebDataset("{base}/{pattern}", shardshuffle=False).decode("pil")
```

With 🤗 `datasets` (one config per video, `all` for every video):

```python
from datasets import load_dataset

frames = load_dataset("{repo}", "{slug}", split="train", streaming=True{rev})
```

With [wids](https://github.com/webdataset/webdataset) (indexed random access; each video's
`{slug}{WIDS_SUFFIX}` lists its shards, which wids downloads on first use):

```python
import wids

dataset = wids.ShardListDataset("{base}/{slug}/{slug}{WIDS_SUFFIX}")
```

With wtours, training DoRA straight from the Hub (streamed; your `hf auth login`
token is used for private repos), or downloading the shards into a local data root (verified against
the index's sha256, resumable):

```bash
wtours train --shards '{spec}' --out runs/{slug}
wtours pull --repo {repo} --city {slug}{rev_flag}
```

Or with the Hub's own CLI, into the same layout under a data root (here `/data/wtours`); `wtours verify`
then checks every shard against its index:

```bash
{download_command(repo, "/data/wtours", slug, revision)}
wtours verify --city {slug} --root /data/wtours
```"""


def download_command(repo: str, root: str, slug: str | None = None, revision: str = DEFAULT_REVISION) -> str:
    """`hf download` of shard sets into ROOT/shards/: the repo's `<slug>/` folders land as `<slug>/` there."""
    include = f" --include '{slug}/*'" if slug else " --include '*/*'"
    rev_flag = "" if revision == DEFAULT_REVISION else f" --revision {revision}"
    return f"hf download {repo} --repo-type {REPO_TYPE}{include}{rev_flag} --local-dir {root}/shards"


def _creator(source: dict[str, Any]) -> str:
    """The creator's name linked to their channel; where no name was recorded (a file added from the
    figshare mirror), the source page credits them."""
    name = source.get("uploader")
    if not name:
        return "as credited at the source"
    return f"[{_cell(name)}]({source['channel_url']})" if source.get("channel_url") else _cell(name)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")

