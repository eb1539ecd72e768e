"""`wtours train` and `wtours export`."""

from __future__ import annotations

import click

from wtours.cli.common import root_option, say, verbosity_options
from wtours.models.registry import vit_names


@click.command("train")
@click.option("--shards", "shards", multiple=True, required=True, metavar="SPEC",
              help="Shards: slug, path pattern, http(s):// or hf:// pattern; repeatable.")
@root_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder: checkpoints, logs, config.")
@click.option("--arch", type=click.Choice(vit_names()), default="vit_small", show_default=True)
@click.option("--out-dim", default=65536, show_default=True)
@click.option("--n-local", default=6, show_default=True, help="Local views per clip.")
@click.option("--epochs", default=100, show_default=True)
@click.option("--steps", type=int, help="Stop after this many steps (schedules span them).")
@click.option("--batch-size", default=16, show_default=True, help="Clips per process.")
@click.option("--clip-frames", default=8, show_default=True)
@click.option("--clip-stride", default=1.0, show_default=True, help="Seconds between a clip's frames.")
@click.option("--clips-per-shard", type=int, help="A random subset of clips per shard and epoch.")
@click.option("--lr", type=float, help="Peak learning rate (default 0.0005 x global batch / 256).")
@click.option("--warmup-epochs", default=10.0, show_default=True)
@click.option("--precision", type=click.Choice(["bf16", "fp16", "fp32"]), help="Default: bf16 on GPU, fp32 on CPU.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the backbones.")
@click.option("--workers", default=4, show_default=True, help="Data loader processes per GPU.")
@click.option("--augment", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="Where JPEG decoding and multi-crop run.")
@click.option("--weighting", type=click.Choice(["authors", "mean"]), default="authors", show_default=True,
              help="The authors' accumulation across objects, or the plain mean.")
@click.option("--resume", is_flag=True, help="Continue from --out/checkpoint.pth.")
@click.option("--init-from", type=click.Path(dir_okay=False), help="Start from a DoRA/DINO checkpoint.")
@click.option("--checkpoint-every", default=1000, show_default=True, help="Steps between checkpoints.")
@click.option("--log-every", default=10, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", help="cuda, cuda:1 or cpu (default: cuda when available).")
@click.option("--knn-train", type=click.Path(file_okay=False), help="ImageFolder for k-NN monitoring.")
@click.option("--knn-val", type=click.Path(file_okay=False), help="ImageFolder for k-NN monitoring.")
@click.option("--knn-every", default=1, show_default=True, help="Epochs between k-NN evaluations.")
@verbosity_options
def train(shards, root, out, arch, out_dim, n_local, epochs, steps, batch_size, clip_frames, clip_stride,
          clips_per_shard, lr, warmup_epochs, precision, compile_, workers, augment, weighting, resume, init_from,
          checkpoint_every, log_every, seed, device, knn_train, knn_val, knn_every) -> None:
    """Train DoRA from shards (single process, or one per GPU with torchrun).

    \b
    Examples:
      wtours train --shards venice --out runs/venice
      torchrun --nproc-per-node 8 -m wtours train --shards venice --out runs/venice --batch-size 16
      wtours train --shards 'hf://datasets/me/wtours/venice/venice-{000000..000013}.tar' --out runs/hf
      wtours train --shards demo-walk --out runs/tiny --arch vit_tiny --steps 20 --out-dim 4096 --resume
    """
    from wtours.train.config import TrainConfig
    from wtours.train.run import train as run_training

    knn = {"train": knn_train, "val": knn_val, "every": knn_every} if knn_train and knn_val else {}
    config = TrainConfig(shards=tuple(shards), out=out, root=root, arch=arch, out_dim=out_dim, n_local=n_local,
                         epochs=epochs, steps=steps, batch_size=batch_size, clip_frames=clip_frames,
                         clip_stride=clip_stride, clips_per_shard=clips_per_shard, lr=lr, warmup_epochs=warmup_epochs,
                         precision=precision, compile=compile_, workers=workers, augment=augment, weighting=weighting,
                         resume=resume, init_from=init_from, checkpoint_every=checkpoint_every, log_every=log_every,
                         seed=seed, device=device, knn=knn)
    run_training(config, say=say)


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False, exists=True))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .pth (a plain state dict).")
@click.option("--which", type=click.Choice(["teacher", "student"]), default="teacher", show_default=True)
def export(checkpoint, out, which) -> None:
    """Write a checkpoint's backbone as a state dict that timm's ViT of the same size loads.

    \b
    Example:
      wtours export runs/venice/checkpoint.pth --out venice_vits16.pth
      python -c "import timm, torch; m = timm.create_model('vit_small_patch16_224', num_classes=0); \\
                 m.load_state_dict(torch.load('venice_vits16.pth'))"
    """
    from wtours.train.export import export_backbone

    click.echo(f"wrote {export_backbone(checkpoint, out, which)}")
