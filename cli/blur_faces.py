"""`wtours blur-faces`."""

from __future__ import annotations

from pathlib import Path

import click

from wtours.cli.common import root_option, say, verbosity_options
from wtours.shard.params import DEFAULT_BLUR_SCALE, DEFAULT_BLUR_THRESHOLD
from wtours.system import usable_cpus


@click.command("blur-faces")
@click.argument("spec")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the blurred set (new).")
@root_option
@click.option("--blur-threshold", default=DEFAULT_BLUR_THRESHOLD, show_default=True,
              help="Face detector score (0..1) above which a face is blurred; lower hides more.")
@click.option("--blur-mode", type=click.Choice(["blur", "pixelate", "box"]), default="blur", show_default=True,
              help="How faces are hidden: Gaussian blur, pixelate, or a black box.")
@click.option("--blur-scale", default=DEFAULT_BLUR_SCALE, show_default=True,
              help="Grow each face box by this factor before hiding it (covers hair and chin).")
@click.option("--blur-upscale", default=1.0, show_default=True,
              help="Run the detector on the frame enlarged by this factor: finds smaller faces, costs its square.")
@click.option("--blur-detector", default="centerface", show_default=True, help="Face detector.")
@click.option("--workers", type=int, show_default="the CPUs this process may use", help="Shards rewritten at once.")
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
    from wtours.shard.blur_set import BlurSettings, blur_shard_set, source_folder
    from wtours.shard.params import ShardParams

    # The same checks as `wtours shard --blur-*` (ranges, modes), with the same messages.
    ShardParams(blur_threshold=blur_threshold, blur_mode=blur_mode, blur_scale=blur_scale, blur_upscale=blur_upscale)
    settings = BlurSettings(blur_threshold, blur_mode, blur_scale, blur_upscale, blur_detector)
    blur_shard_set(source_folder(spec, root), Path(out), settings, workers or usable_cpus(), say=say)
