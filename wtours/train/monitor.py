"""The evaluations during training (`--eval-every` with `--knn-*`, `--linear-*`, `--davis`): their data checked
before the run starts, run on rank 0 on the teacher's backbone after every N-th epoch and the last step (the
other ranks wait at their next collective), each figure logged with the step. One that fails mid-run is warned
about and logged (`<name>_error`); the training goes on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from wtours import distributed
from wtours.errors import UsageError, WtoursError
from wtours.eval.config import DavisConfig, KnnConfig, LinearConfig
from wtours.train.config import TrainConfig

log = logging.getLogger(__name__)

Figures = dict[str, Any]  # a log line's figures, unprefixed; the float ones are also TensorBoard scalars


class Monitor:
    """Built on rank 0 when the run starts: a folder that is not usable is refused then (exit 2)."""

    def __init__(self, config: TrainConfig):
        from wtours.eval.data import labelled_pair  # torchvision: imported when the run starts

        self.every = config.eval_every
        self.checks: list[tuple[str, Callable[[Any, torch.device], tuple[Figures, str]]]] = []
        workers = min(config.workers or 0, 4)
        if config.knn_train and config.knn_val:
            from wtours.eval.knn import evaluate_knn, result_line

            knn = KnnConfig(workers=workers)
            train, val = labelled_pair(config.knn_train, config.knn_val, knn.resize, knn.crop)

            def knn_figures(backbone: Any, device: torch.device) -> tuple[Figures, str]:
                result = evaluate_knn(backbone, train, val, knn, device)
                return {"top1": result.top1, "top5": result.top5}, result_line(result)

            self.checks.append(("knn", knn_figures))
        if config.linear_train and config.linear_val:
            from wtours.eval.linear import short_probe

            probe = LinearConfig(train=config.linear_train, val=config.linear_val, workers=workers)
            probe_train, probe_val = labelled_pair(probe.train, probe.val, probe.resize, probe.crop)

            def linear_figures(backbone: Any, device: torch.device) -> tuple[Figures, str]:
                result = short_probe(backbone, probe_train, probe_val, config.linear_epochs, device, probe)
                return result, (f"linear probe (short: fast mode, {result['epochs']} epochs): top-1 "
                                f"{result['top1']:.2f}%, top-5 {result['top5']:.2f}%")

            self.checks.append(("linear", linear_figures))
        if config.davis:
            from wtours.eval.davis import davis_backbone, read_layout

            try:
                sequences = read_layout(config.davis, only=config.davis_sequences)
            except WtoursError as e:  # a DAVIS folder lacking something: still the command line's to fix
                raise UsageError(f"--davis: {e.message}", e.hint) from e

            def davis_figures(backbone: Any, device: torch.device) -> tuple[Figures, str]:
                result = davis_backbone(backbone, sequences, DavisConfig(), device)
                return ({"jf": result.jf_mean, "j": result.j_mean, "f": result.f_mean, "sequences": len(sequences)},
                        f"DAVIS J&F-Mean {result.jf_mean:.3f} (J {result.j_mean:.3f}, F {result.f_mean:.3f}) on "
                        f"{len(sequences)} sequences ({result.seconds:.1f} s)")

            self.checks.append(("davis", davis_figures))

    @classmethod
    def on_rank0(cls, config: TrainConfig, dist: distributed.Dist) -> Monitor | None:
        """Rank 0's monitor (None on the other ranks); its refusal of the data reaches every rank."""
        made: list[Monitor] = []
        distributed.agree(dist, lambda: made.append(cls(config)))
        return made[0] if made else None

    def due(self, epochs_done: int | None, run_over: bool) -> bool:
        """epochs_done: epochs completed when an epoch has just ended, else None."""
        return bool(self.checks) and (run_over or (epochs_done is not None and epochs_done % self.every == 0))

    def evaluate(self, backbone: torch.nn.Module, device: torch.device) -> list[tuple[str, Figures, str]]:
        """(name, figures, console line) of each evaluation; a failed one's figures are {"error": why}. The
        backbone runs in eval mode and back (the training reseeds its random draws every step: it goes on as it
        would have without the evaluations)."""
        done = []
        was_training = backbone.training
        backbone.eval()
        try:
            for name, figures in self.checks:
                try:
                    done.append((name, *figures(backbone, device)))
                except (WtoursError, OSError, RuntimeError, ValueError) as e:  # OOM is a RuntimeError
                    why = e.message if isinstance(e, WtoursError) else f"{type(e).__name__}: {e}"
                    log.warning("the %s evaluation failed (%s); training goes on", name, why)
                    done.append((name, {"error": why}, f"{name} evaluation failed: {why}"))
        finally:
            backbone.train(was_training)
        return done
