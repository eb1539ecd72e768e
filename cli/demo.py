"""`wtours demo`."""

from __future__ import annotations

from pathlib import Path

import click

from wtours.cli.common import is_quiet, say, verbosity_options
from wtours.demo import DemoConfig, run_demo
from wtours.system import usable_cpus


@click.command()
@click.option("--root", type=click.Path(file_okay=False), default="demo-root", show_default=True,
              help="Data root for the demo's outputs (kept apart from your real root).")
@click.option("--workers", default=usable_cpus, show_default="the CPUs this process may use", type=int)
@click.option("--steps", default=30, show_default=True, help="Training steps.")
@verbosity_options
def demo(root: str, workers: int, steps: int) -> None:
    """Run the whole pipeline offline on a built-in synthetic walking video.

    \b
    Example:
      wtours demo --root /tmp/wtours-demo
    """
    run_demo(DemoConfig(root=Path(root).absolute(), workers=workers, steps=steps, progress=not is_quiet()), say=say)
