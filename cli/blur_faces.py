"""`wtours blur-faces`."""

from __future__ import annotations

from pathlib import Path

import click

from wtours.cli.common import root_option, say, verbosity_options
from wtours.config import WORKERS, click_options, number_type
from wtours.privacy.params import BlurParams
from wtours.system import usable_cpus


@click.command("blur-faces")
@click.argument("spec")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the blurred set (new).")
@click.option("--overwrite", is_flag=True, help="Replace the shard set --out holds (refused without it).")
@root_option
@click_options(BlurParams)  # the options of `wtours shard --blur-*`, declared once
@click.option("--workers", type=number_type(int, WORKERS), show_default="the CPUs this process may use",
              help="Shards rewritten at once.")
@verbosity_options
def blur_faces(spec, out, overwrite, root, workers, **blur) -> None:
    """Hide faces in shards that already exist: SPEC's shards are rewritten into --out with a new index.json.

    SPEC: a slug sharded under --root, or a folder holding index.json (./NAME for one named like a
    video). Frames without faces keep their bytes; frames with faces are blurred and encoded again.
    --out must not be (or lie in) the source folder, by any path; a folder holding another set is
    refused unless --overwrite. Needs the privacy extra. To blur while sharding (one JPEG generation
    fewer), use `wtours shard --blur-faces`.

    \b
    Examples:
      wtours blur-faces venice --out /data/venice-blurred
      wtours blur-faces /data/shards/venice --out /data/venice-blurred --blur-mode pixelate
    """
    from wtours.shard.blur_set import blur_shard_set, source_folder

    blur_shard_set(source_folder(spec, root), Path(out), BlurParams(**blur), workers or usable_cpus(), say=say,
                   overwrite=overwrite)
