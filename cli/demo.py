"""`wtours demo`."""

from __future__ import annotations

from pathlib import Path

import click

from wtours.cli.common import is_quiet, local_root, say, verbosity_options
from wtours.config import WORKERS, Range, number_type
from wtours.demo import DemoConfig, run_demo
from wtours.system import usable_cpus


@click.command()
@click.option("--root", type=click.Path(file_okay=False), default="demo-root", show_default=True, callback=local_root,
              help="Data root for the demo's outputs (kept apart from your real root).")
@click.option("--workers", default=usable_cpus, show_default="the CPUs this process may use",
              type=number_type(int, WORKERS),
              help="Parallel processes for decoding (shard) and data loading (train).")
@click.option("--steps", default=30, show_default=True, type=number_type(int, Range(1, 100_000)),
              help="Training steps.")
@verbosity_options
def demo(root: str, workers: int, steps: int) -> None:
    """Run the whole pipeline offline on a built-in synthetic walking video.

    \b
    Example:
      wtours demo --root /tmp/wtours-demo
    """
    report = run_demo(DemoConfig(root=Path(root).absolute(), workers=workers, steps=steps, progress=not is_quiet()),
                      say=say)
    if is_quiet():  # -q: the final result only, on one line
        train = report["train"]
        click.echo(f"demo: {train['steps']} steps, loss {train['first_loss']:.3f} -> {train['last_loss']:.3f}; "
                   f"cuts at {', '.join(f'{t:.1f}' for t in report['stats']['cuts']) or 'none'} s; "
                   f"outputs under {report['root']}")
