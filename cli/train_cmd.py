"""`wtours train` and `wtours export`."""

from __future__ import annotations

import click

from wtours.cli.common import say, verbosity_options
from wtours.config import click_options, from_command
from wtours.train.config import TrainConfig

CONFIG_HELP = ("YAML or JSON settings, nested as a run's config.json or flat by option name "
               "(e.g. `teacher_temp: 0.07`); a run's config.json runs it again.")


@click.command("train")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
              help=CONFIG_HELP)
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="One setting by option name (teacher_temp=0.07) or path (model.loss.teacher_temp=0.07); "
                   "repeatable; over --config.")
@click_options(TrainConfig)
@verbosity_options
@click.pass_context
def train(ctx: click.Context, config_file: str | None, assignments: tuple[str, ...], **values) -> None:
    """Train DoRA from shards (one process, one per GPU with torchrun, or one per srun task).

    Settings: every option below, or --config FILE and --set KEY=VALUE. Precedence, lowest first:
    defaults, $WTOURS_ROOT, --config, --set, options on the command line. The run folder's
    config.json holds the resulting settings.

    One run at a time per --out (a second one is refused, naming the holder). A folder that holds a
    run needs --resume (continue it; changed schedule settings need --reschedule) or --overwrite
    (start afresh). Ctrl-C exits 130 and a kill leaves the last complete checkpoint: rerun with --resume.

    \b
    Examples:
      wtours train --shards venice --out runs/venice
      torchrun --nproc-per-node 8 -m wtours train --shards venice --out runs/venice --batch-size 16
      srun --ntasks-per-node 8 wtours train --shards venice --out runs/venice   # SLURM, no torchrun
      wtours train --shards 'hf://datasets/me/wtours/venice/venice-{000000..000013}.tar' --out runs/hf
      wtours train --shards demo-walk --out runs/tiny --arch vit_tiny --steps 20 --out-dim 4096 --resume
      wtours train --config runs/venice/config.json --set teacher_temp=0.07 --out runs/venice-t07
    """
    from wtours.train.run import train as run_training

    run_training(from_command(TrainConfig, ctx, values, config_file, assignments), say=say)


def config_from_args(args: list[str]) -> TrainConfig:
    """The TrainConfig that `wtours train ARGS` would run, parsed by the command itself (for tests, scripts)."""
    with train.make_context("train", list(args)) as ctx:
        params = dict(ctx.params)
        return from_command(TrainConfig, ctx, params, params.pop("config_file"), params.pop("assignments"))


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
