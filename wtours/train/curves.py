"""A run's curves as a PNG beside its log (loss.png): the training loss, and the evaluations during training,
drawn from log.jsonl with Pillow (a base dependency: no plotting library is needed to train)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from wtours.layout import RUN_CURVES_FILE, RUN_LOG_FIGURES, RUN_LOG_FILE, replace_atomically

log = logging.getLogger(__name__)

Series = list[tuple[int, float]]  # (step, value)
WIDTH, PANEL_HEIGHT, MARGIN = 800, 280, (70, 30, 20, 40)  # margins: left, top, right, bottom
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34))  # matplotlib's tab10
SCORE_FIGURES = ("top1", "top5", "jf", "j", "f")  # the evaluations' figures drawn (counts such as epochs are not)


def read_curves(log_path: Path) -> dict[str, Series]:
    """log.jsonl's `loss_mean` and `loss` (drawn in this order: where they are equal, --log-every 1, the logged
    step's is seen) and each evaluation's scores (knn_top1, davis_jf, ...), by step; a line cut
    short (a run killed while writing it) or a non-finite value is left out."""
    wanted = ["loss_mean", "loss", *(f"{name}_{figure}" for name, figures in RUN_LOG_FIGURES.items()
                                     for figure in figures if figure in SCORE_FIGURES)]
    curves: dict[str, Series] = {}
    for line in log_path.read_text(encoding="utf-8").splitlines() if log_path.is_file() else ():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            continue
        for key in wanted:
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                curves.setdefault(key, []).append((record["step"], float(value)))
    return curves


def render_curves(curves: dict[str, Series], title: str) -> Image.Image:
    """One panel for the loss (the logged step's and the mean since the last line), one for the evaluations
    (as logged: k-NN and linear in percent, DAVIS J&F as its evaluation reports it) when there are any."""
    losses = {k: v for k, v in curves.items() if k.startswith("loss")}
    evaluations = {k: v for k, v in curves.items() if not k.startswith("loss")}
    panels = [("DoRA loss", losses), *([("evaluations", evaluations)] if evaluations else [])]
    image = Image.new("RGB", (WIDTH, PANEL_HEIGHT * len(panels)), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    steps = [step for curve in curves.values() for step, _ in curve] or [0]
    span = (min(steps), max(max(steps), min(steps) + 1))  # one step axis for every panel
    for i, (label, panel) in enumerate(panels):
        _panel(draw, font, panel, (0, PANEL_HEIGHT * i), span, f"{title}: {label}" if i == 0 else label)
    return image


def _panel(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
           series: dict[str, Series], origin: tuple[int, int], span: tuple[int, int], title: str) -> None:
    left, top, right, bottom = MARGIN
    x0, y0 = origin[0] + left, origin[1] + top
    x1, y1 = origin[0] + WIDTH - right, origin[1] + PANEL_HEIGHT - bottom
    draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0))
    draw.text((x0, origin[1] + 8), title, fill=(0, 0, 0), font=font)
    points = [p for s in series.values() for p in s]
    if not points:
        draw.text((x0 + 10, y0 + 10), "nothing logged yet", fill=(0, 0, 0), font=font)
        return
    values = [p[1] for p in points]
    s_lo, s_hi = span
    v_lo, v_hi = min(values), max(values)
    pad = (v_hi - v_lo) * 0.05 or abs(v_hi) * 0.05 or 1.0
    v_lo, v_hi = v_lo - pad, v_hi + pad

    def xy(step: int, value: float) -> tuple[float, float]:
        return (x0 + (step - s_lo) / (s_hi - s_lo) * (x1 - x0), y1 - (value - v_lo) / (v_hi - v_lo) * (y1 - y0))

    for value in (v_lo + pad, (v_lo + v_hi) / 2, v_hi - pad):  # the range drawn, and its middle
        y = xy(s_lo, value)[1]
        draw.line((x0 - 4, y, x0, y), fill=(0, 0, 0))
        draw.text((origin[0] + 4, y - 6), f"{value:.4g}", fill=(0, 0, 0), font=font)
    draw.text((x0, y1 + 6), f"step {s_lo}", fill=(0, 0, 0), font=font)
    last = f"step {s_hi}"
    draw.text((x1 - draw.textlength(last, font=font), y1 + 6), last, fill=(0, 0, 0), font=font)
    legend = x0 + draw.textlength(title, font=font) + 24
    for n, (name, curve) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        line = [xy(step, value) for step, value in curve]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        for x, y in line if len(line) <= 200 else ():  # the logged points, where they can be told apart
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        draw.text((legend, origin[1] + 8), name, fill=colour, font=font)  # in the header: never over a curve
        legend += draw.textlength(name, font=font) + 16


def write_curves(out: Path, title: str = "wtours train") -> Path | None:
    """Draw out/log.jsonl into out/loss.png (atomically; the previous picture stays until the new one is whole).
    A failure to write it is a warning, never the run's end: the curve is a view of the log, which is kept."""
    path = out / RUN_CURVES_FILE
    try:
        image = render_curves(read_curves(out / RUN_LOG_FILE), title)
        replace_atomically(path, lambda tmp: image.save(tmp, format="PNG"))
    except OSError as e:
        log.warning("could not write the loss curve %s (%s); log.jsonl holds the figures", path, e)
        return None
    return path
