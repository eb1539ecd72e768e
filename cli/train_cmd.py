"""`wtours train` and `wtours export`."""

from __future__ import annotations

from dataclasses import asdict

import click

from wtours.cli.common import SectionedCommand, say, verbosity_options
from wtours.config import as_yaml, click_options, command_settings, from_command
from wtours.hub.model_card import DEFAULT_LICENSE, EXPORT_FORMATS  # (no torch: --help stays fast)
from wtours.train.config import TrainConfig

CONFIG_HELP = ("YAML or JSON settings, nested as a run's config.json or flat by option name "
               "(e.g. `teacher_temp: 0.07`); a run's config.json runs it again.")


# `wtours train --help`'s headings for the top config's options (the model's come from its sub-configs); an
# option not named here is listed under "Options".
TRAIN_SECTIONS = {
    **dict.fromkeys(("shards", "out", "root", "resume", "overwrite", "reschedule", "init_from"),
                    "Input and run folder options"),
    **dict.fromkeys(("epochs", "steps", "lr", "min_lr", "warmup_epochs", "weight_decay", "weight_decay_end",
                     "momentum_teacher", "clip_grad", "freeze_last_layer", "seed"), "Schedule options"),
    **dict.fromkeys(("batch_size", "clip_frames", "clip_stride", "clips_per_shard", "epoch_length", "workers",
                     "augment", "shuffle_buffer"), "Clip and loader options"),
    **dict.fromkeys(("device", "precision", "compile", "checkpoint_every", "log_every"), "Machine and logging options"),
    **dict.fromkeys(("eval_every", "knn_train", "knn_val", "knn_every", "linear_train", "linear_val", "linear_epochs",
                     "davis", "davis_sequences"), "Evaluation options (while training)"),
}


@click.command("train", cls=SectionedCommand, sections=TRAIN_SECTIONS)
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
              help=CONFIG_HELP)
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="One setting by option name (teacher_temp=0.07) or path (model.loss.teacher_temp=0.07); "
                   "repeatable; over --config.")
@click.option("--print-config", is_flag=True,
              help="Print the resolved settings as YAML (what --config FILE reads back) and exit; nothing is "
                   "created or started.")
@click_options(TrainConfig)
@verbosity_options
@click.pass_context
def train(ctx: click.Context, config_file: str | None, assignments: tuple[str, ...], print_config: bool,
          **values) -> None:
    """Train DoRA from shards (one process, one per GPU with torchrun, or one per srun task).

    Settings: every option below, or --config FILE and --set KEY=VALUE. Precedence, lowest first:
    defaults, $WTOURS_ROOT, --config, --set, options on the command line. The run folder's
    config.json holds the resulting settings.

    One run at a time per --out (a second one is refused, naming the holder). A folder that holds a
    run needs --resume (continue it; changed schedule settings need --reschedule) or --overwrite
    (start afresh). Ctrl-C exits 130 and a kill leaves the last complete checkpoint; SIGTERM or SIGUSR1 (a
    scheduler's preemption or time-limit warning) stops every rank at the next step with a checkpoint of it, exit 143:
    rerun with --resume.

    \b
    Examples:
      wtours train --shards venice --out runs/venice
      torchrun --nproc-per-node 8 -m wtours train --shards venice --out runs/venice --batch-size 16
      srun --ntasks-per-node 8 --cpus-per-task 8 \\
        wtours train --shards venice --out runs/venice --workers 7   # SLURM, no torchrun
      wtours train --shards 'hf://datasets/me/wtours/venice/venice-{000000..000013}.tar' --out runs/hf
      wtours train --shards demo-walk --out runs/tiny --arch vit_tiny --steps 20 --out-dim 4096 --resume
      wtours train --config runs/venice/config.json --set teacher_temp=0.07 --out runs/venice-t07
      wtours train --shards venice --out runs/venice --print-config > venice.yaml   # then --config venice.yaml
    """
    config = training_config(ctx, values, config_file, assignments)
    if print_config:
        click.echo(as_yaml(config), nl=False)
        return
    from wtours.train.run import train as run_training

    run_training(config, say=say)


def training_config(ctx: click.Context, values: dict, config_file: str | None,
                    assignments: tuple[str, ...]) -> TrainConfig:
    """The settings given, over defaults; with --resume in a run folder, over the run's own model settings
    (so only a model option given explicitly differs from the checkpoint's, and is refused there)."""
    from wtours.train.folder import refuse_reshaped_model, resumed_model_settings  # (imports torch)

    given = command_settings(TrainConfig, ctx, values, config_file, assignments)
    resumed = resumed_model_settings(given)  # (the run's model settings, the file they were read from) or None
    base = {"model": resumed[0]} if resumed else {}
    config = from_command(TrainConfig, ctx, values, config_file, assignments, base=base)
    if resumed:
        refuse_reshaped_model(resumed[0], asdict(config.model), resumed[1])
    return config


def config_from_args(args: list[str]) -> TrainConfig:
    """The TrainConfig that `wtours train ARGS` would run, parsed by the command itself (for tests, scripts)."""
    with train.make_context("train", list(args)) as ctx:
        params = dict(ctx.params)
        params.pop("print_config")
        return training_config(ctx, params, params.pop("config_file"), params.pop("assignments"))


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False, exists=True))
@click.option("--out", required=True, type=click.Path(), metavar="DIR|FILE.pth",
              help="A folder for --format timm, a .pth file for --format pth.")
@click.option("--format", "format_", type=click.Choice(EXPORT_FORMATS), default=None,
              help="timm: a folder (model.safetensors, config.json with the normalisation, README.md model card) "
                   "that timm.create_model('local-dir:DIR', pretrained=True) loads and `wtours push --model` "
                   "uploads; pth: the backbone's state dict alone. Default: from --out (NAME.pth: pth, a name "
                   "without a suffix: timm).")
@click.option("--which", type=click.Choice(["teacher", "student"]), default="teacher", show_default=True,
              help="The network of the training checkpoint to export: the teacher (the EMA of the student, "
                   "the one DINO and DoRA evaluate and release) or the student. A bare backbone is exported "
                   "as it is (--which student is refused for one).")
@click.option("--license", "license_", default=DEFAULT_LICENSE, show_default=True, metavar="ID",
              help="The weights' licence for the model card's metadata (a Hub licence id). The default is the "
                   "Walking Tours videos' CC-BY 4.0, which the weights derive from.")
@click.option("--dataset", "datasets", multiple=True, metavar="USER/NAME[@REV]",
              help="A Hub dataset repo the run trained on, linked from the model card; repeatable. Found "
                   "without it for hf:// shards and for shard sets fetched with `wtours pull`.")
@verbosity_options
def export(checkpoint, out, format_, which, license_, datasets) -> None:
    """Write a checkpoint's backbone for timm: a model folder (--format timm) or a state dict (.pth).

    CHECKPOINT is a wtours training checkpoint, the authors' DoRA/DINO checkpoint, or an exported
    backbone. The timm folder's config.json carries the architecture and sizes, the ImageNet mean/std
    the trainer normalised with and the eval view; its model card names the run's settings, training
    data and k-NN results. Guide: docs/models.md.

    \b
    Examples:
      wtours export runs/venice/checkpoint.pth --out venice-vits16
      python -c "import timm; m = timm.create_model('local-dir:venice-vits16', pretrained=True, num_classes=0)"
      wtours push --model venice-vits16 --repo alice/venice-vits16
      wtours export runs/venice/checkpoint.pth --out venice_vits16.pth   # state dict (--format pth)
      wtours export runs/venice/checkpoint.pth --out venice-vits16-v0.1 --dataset alice/walking-tours
    """
    from wtours.hub.export import export as run_export

    click.echo(f"wrote {run_export(checkpoint, out, which, format_, license_, tuple(datasets))}")
