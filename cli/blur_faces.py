"""`wtours blur-faces`."""

from __future__ import annotations

from pathlib import Path

import click

from wtours.cli.common import root_option, say, verbosity_options
from wtours.config import WORKERS, click_options, number_type
from wtours.shard.params import ShardParams
from wtours.system import usable_cpus

# The same options as `wtours shard --blur-*` (ranges, modes, help), declared once in ShardParams.
BLUR_OPTIONS = ("blur_threshold", "blur_mode", "blur_scale", "blur_upscale", "blur_detector")


@click.command("blur-faces")
@click.argument("spec")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the blurred set (new).")
@root_option
@click_options(ShardParams, only=BLUR_OPTIONS)
@click.option("--workers", type=number_type(int, WORKERS), show_default="the CPUs this process may use",
              help="Shards rewritten at once.")
@verbosity_options
def blur_faces(spec, out, root, blur_threshold, blur_mode, blur_scale, blur_upscale, blur_detector, workers) -> None:
    """Hide faces in shards that already exist: SPEC's shards are rewritten into --out with a new index.json.

    SPEC: a slug sharded under --root, or a folder holding index.json. Frames without faces keep their
    bytes; frames with faces are blurred and encoded again. Needs the privacy extra. To blur while
    sharding (one JPEG generation fewer), use `wtours shard --blur-faces`.

    \b
    Examples:
      wtours blur-faces venice --out /data/venice-blurred
      wtours blur-faces /data/shards/venice --out /data/venice-blurred --blur-mode pixelate
    """
    from wtours.privacy.rewrite import BlurSettings, blur_shard_set, source_folder

    settings = BlurSettings(blur_threshold, blur_mode, blur_scale, blur_upscale, blur_detector)
    blur_shard_set(source_folder(spec, root), Path(out), settings, workers or usable_cpus(), say=say)
