"""`wtours eval knn`, `wtours eval linear`, `wtours eval davis`."""

from __future__ import annotations

import click

from wtours.cli.common import say, verbosity_options
from wtours.config import click_options, from_command, option_type
from wtours.eval.config import DavisConfig, KnnConfig, LinearConfig
from wtours.models.registry import vit_names


@click.group("eval")
def eval_group() -> None:
    """Measure a trained encoder on labelled images or videos (frozen backbone).

    \b
    Examples:
      wtours eval knn runs/venice/checkpoint.pth --train imagenet/train --val imagenet/val
      wtours eval linear runs/venice/checkpoint.pth --train imagenet/train --val imagenet/val
      wtours eval davis runs/venice/checkpoint.pth --davis DAVIS --out runs/venice/davis
    """


@eval_group.command("knn")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--train", "train_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="Labelled images: DIR/<class>/<image>.")
@click.option("--val", "val_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="Held-out images, class folders named as in --train.")
@click_options(KnnConfig, only=("k", "temperature", "batch_size"))
@click.option("--arch", type=click.Choice(vit_names()), help="Default: inferred from the weights' shapes.")
@click.option("--which", type=click.Choice(["teacher", "student"]), default="teacher", show_default=True,
              help="Which network of a training checkpoint.")
@click.option("--workers", help="Image-decoding processes (default: one per usable CPU, as `wtours train`; 0: in "
                                "this process).", type=option_type(KnnConfig, "workers"))
@click.option("--device", help="cuda, cuda:1 or cpu (default: cuda when available).")
@click.option("--out", type=click.Path(dir_okay=False), help="Result json (default: CHECKPOINT's name + .knn.json).")
@verbosity_options
def knn(checkpoint, train_dir, val_dir, k, temperature, arch, which, batch_size, workers, device, out) -> None:
    """DINO's weighted k-NN top-1/top-5 of a checkpoint's frozen backbone on ImageFolder sets.

    [CLS] features, L2-normalised; resize 256, centre crop 224, ImageNet normalisation. CHECKPOINT is a
    wtours training checkpoint, the authors' DoRA/DINO checkpoint, or a `wtours export` backbone (a .pth,
    or a --format timm folder).
    Protocol and formulas: docs/eval.md.

    \b
    Examples:
      wtours eval knn runs/venice/checkpoint.pth --train imagenet/train --val imagenet/val
      wtours eval knn dora_vits16.pth --train pets/train --val pets/val --k 10 --device cuda
      wtours eval knn venice_vits16.pth --train digits/train --val digits/val --arch vit_small --out knn.json
    """
    from wtours.eval.knn import knn_checkpoint, result_line

    config = KnnConfig(k=k, temperature=temperature, batch_size=batch_size, workers=workers)
    result, path = knn_checkpoint(checkpoint, train_dir, val_dir, config, out=out, arch=arch, which=which,
                                  device=device, say=say)
    click.echo(result_line(result))
    say(f"wrote {path}")


@eval_group.command("linear")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
              help="YAML or JSON settings by option name (e.g. `lr: 0.01`); a probe folder's config.json "
                   "runs it again.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="One setting by option name (lr=0.01); repeatable; over --config.")
@click_options(LinearConfig)
@verbosity_options
@click.pass_context
def linear(ctx: click.Context, checkpoint, config_file, assignments, **values) -> None:
    """DINO's linear probe (the DoRA authors' eval_linear.py) on a checkpoint's frozen backbone.

    A linear layer on the [CLS] tokens of the last --n-last-blocks blocks, trained by SGD (momentum
    0.9, lr x global batch / 256, cosine to 0) on RandomResizedCrop + flip views, measured on
    resize 256 + centre crop 224 views: top-1/top-5 per epoch and in --out/linear.json.
    CHECKPOINT: a training checkpoint (ours, or the authors' DoRA/DINO one) or an exported
    backbone. One process, or one per GPU with torchrun/srun; a rerun resumes the probe in --out.
    --mode fast computes the features once without augmentation (quicker; not the protocol, and
    labelled so). Protocol: docs/eval.md.

    \b
    Examples:
      wtours eval linear runs/venice/checkpoint.pth --train imagenet/train --val imagenet/val
      torchrun --nproc-per-node 4 -m wtours eval linear dora_venice.pth --train imagenet/train \\
        --val imagenet/val --batch-size 512 --lr 0.01 --n-last-blocks 4   # the authors' run
      wtours eval linear venice_vits16.pth --train pets/train --val pets/val --mode fast --epochs 20
    """
    from wtours.eval.linear import linear_probe, result_line

    config = from_command(LinearConfig, ctx, values, config_file, assignments)
    result, path = linear_probe(checkpoint, config, say=say)
    click.echo(result_line(result))
    say(f"wrote {path}")


@eval_group.command("davis")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--davis", "davis_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="DAVIS-2017: JPEGImages/480p, Annotations/480p, ImageSets/2017.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Results folder: OUT/<sequence>/<frame>.png (the official evaluation's layout) and davis.json.")
@click.option("--image-set", "subset", default="val", show_default=True, metavar="NAME",
              help="Sequences of ImageSets/2017/NAME.txt.")
@click_options(DavisConfig)
@click.option("--arch", type=click.Choice(vit_names()), help="Default: inferred from the weights' shapes.")
@click.option("--which", type=click.Choice(["teacher", "student"]), default="teacher", show_default=True,
              help="Which network of a training checkpoint.")
@click.option("--device", help="cuda, cuda:1 or cpu (default: cuda when available).")
@click.option("--overwrite", is_flag=True, help="Replace segmentations in --out made by another run.")
@verbosity_options
def davis(checkpoint, davis_dir, out, subset, arch, which, device, overwrite, **settings) -> None:
    """Video object segmentation on DAVIS-2017 by DINO's label propagation; J and F as DAVIS scores them.

    Patch features of the last block, the first frame's annotation propagated through the sequence
    (affinities to the first and the --n-last-frames previous frames, --topk voters within
    --size-mask-neighborhood patches). A rerun resumes at the first sequence not segmented yet.
    Protocol and formulas: docs/eval.md.

    \b
    Examples:
      wtours eval davis runs/venice/checkpoint.pth --davis DAVIS --out runs/venice/davis
      wtours eval davis dora_vits16.pth --davis DAVIS --out davis-dora --device cuda
    """
    from wtours.eval.davis import davis_checkpoint, result_table

    result, path = davis_checkpoint(checkpoint, davis_dir, out, DavisConfig(**settings), subset=subset, arch=arch,
                                    which=which, device=device, overwrite=overwrite, progress=say)
    click.echo(result_table(result))
    say(f"wrote {path}")
