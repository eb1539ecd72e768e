"""`wtours export`: a checkpoint's backbone for use outside wtours (docs/models.md), in one of two formats:
- `timm`: a folder that `timm.create_model("local-dir:DIR", pretrained=True)` (once pushed, "hf-hub:USER/NAME")
  loads: model.safetensors, config.json (timm's architecture, the ViT's sizes as `model_args`, `pretrained_cfg`
  with the trainer's normalisation and eval view, and a "wtours" entry saying where the weights came from,
  which the model card is rendered from) and the card (README.md);
- `pth`: the backbone's state dict alone (torch.save), for `model.load_state_dict` by hand.
Without --format, --out's name picks it (resolve_format). The run's settings are made public once, here
(model_card.public_settings: no credentials, local paths cut to their last part)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wtours import __version__
from wtours.errors import UsageError, WtoursError
from wtours.hub.model_card import (
    BACKBONE,
    CARD_FILE,
    CONFIG_FILE,
    DEFAULT_LICENSE,
    EXPORT_FORMATS,
    EXPORT_KEY,
    WEIGHTS_FILE,
    KnnScores,
    check_license,
    check_publishable,
    dataset_entries,
    is_export_config,
    is_generated_model_card,
    local_name,
    parse_dataset,
    public_settings,
    render_model_card,
)
from wtours.layout import (
    PULLED_FROM,
    RUN_LOG_FIGURES,
    RUN_LOG_FILE,
    Layout,
    is_url,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
)
from wtours.models.checkpoint import load_backbone, read_weights, save_file
from wtours.models.registry import IMAGENET_MEAN, IMAGENET_STD, ViTConfig
from wtours.records import is_number, read_record

PTH_SUFFIXES = (".pth", ".pt")
# Suffixes of weight and data files: --out NAME.<one of these> names a file, which --format timm does not
# write; any other suffix (venice-vits16-v0.1) is part of a folder's name.
FILE_SUFFIXES = (*PTH_SUFFIXES, ".safetensors", ".bin", ".ckpt", ".pkl", ".pickle", ".h5", ".onnx", ".npz",
                 ".npy", ".json", ".yaml", ".yml", ".txt", ".md", ".tar", ".zip", ".gz", ".msgpack", ".gguf")

# timm's own ViT of each registered size; any other (vit_micro, vit_tiny_patch8) is timm's generic ViT
# built with the sizes in config.json's model_args, which timm's loaders pass to the model.
TIMM_NAMES = {(192, 16, 12): "vit_tiny_patch16_224", (384, 16, 12): "vit_small_patch16_224",
              (384, 8, 12): "vit_small_patch8_224", (768, 16, 12): "vit_base_patch16_224",
              (768, 8, 12): "vit_base_patch8_224"}
GENERIC_TIMM_VIT = "vit_tiny_patch16_224"
# The eval view of `wtours eval knn` (wtours/eval/data.py): resize 256 bicubic, centre crop 224.
EVAL_RESIZE, EVAL_CROP = 256, 224


def resolve_format(out: str | os.PathLike, format_: str | None) -> str:
    """The export format: the one given, checked against --out's suffix, or the one --out's suffix names
    (NAME.pth / NAME.pt: `pth`; any other name, dots and all, is a `timm` folder). --out is a local path:
    a URL would become a folder named `s3:`."""
    if is_url(str(out)):
        raise UsageError(f"--out {out!r} is a URL; `wtours export` writes a local folder or file",
                          "export to a local path, then publish it: `wtours push --model DIR --repo USER/NAME` "
                          "(or copy it with your storage's own tool)")
    path = Path(out)
    suffix = path.suffix.lower() if path.suffix.lower() in FILE_SUFFIXES else ""
    if format_ is not None and format_ not in EXPORT_FORMATS:
        raise UsageError(f"--format {format_!r} is not one of {', '.join(EXPORT_FORMATS)}", "pass --format timm or pth")
    if format_ == "pth" or (format_ is None and suffix in PTH_SUFFIXES):
        if suffix not in PTH_SUFFIXES:
            raise UsageError(f"--format pth writes one state-dict file, but --out {out} does not end in .pth",
                              f"pass --out {path.with_suffix('.pth').name}, or --format timm --out "
                              f"{path.with_suffix('').name} for a timm folder (model.safetensors + config.json)")
        if path.is_dir():
            raise UsageError(f"--out {out} is a folder; --format pth writes one file",
                              "pass a file name ending in .pth")
        return "pth"
    if suffix and not (format_ == "timm" and path.is_dir()):  # an existing folder keeps its name
        what = "no export format writes" if format_ is None else "--format timm writes a folder, not"
        raise UsageError(
            f"--out {out}: {what} a {suffix} file",
            f"for timm pass a folder name without a suffix (--out {path.with_suffix('').name} gets {WEIGHTS_FILE}, "
            f"{CONFIG_FILE} and {CARD_FILE}), or --out NAME.pth for a plain state dict (--format pth)")
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out} is a file; --format timm writes a folder", "pass a folder name")
    return "timm"


def export(checkpoint_path: str | os.PathLike, out: str | os.PathLike, which: str = "teacher",
           format_: str | None = None, license_: str = DEFAULT_LICENSE,
           datasets: tuple[str, ...] = ()) -> Path:
    """`wtours export`: the format from --format / --out (resolve_format), then the files. --format timm:
    DIR/model.safetensors, DIR/config.json and DIR/README.md. config.json goes last and an earlier export's
    config.json is removed first, so the folder never pairs new weights with another model's config (timm
    refuses a folder without one). A README.md not written by wtours is kept; a config.json not written by
    `wtours export` refuses the folder."""
    if resolve_format(out, format_) == "pth":
        return export_backbone(checkpoint_path, out, which)
    check_license(license_)
    named = dataset_entries([parse_dataset(d) for d in datasets])
    out = Path(out)
    old_config = read_json(out / CONFIG_FILE) if (out / CONFIG_FILE).is_file() else None
    if (out / CONFIG_FILE).exists() and not is_export_config(old_config):
        raise UsageError(f"{out / CONFIG_FILE} exists and was not written by `wtours export` (a training run's "
                          "folder?); exporting there would replace it",
                          "pass --out a new folder, or one an earlier `wtours export --format timm` wrote")
    raw = read_weights(checkpoint_path)
    backbone, arch = load_backbone(raw, None, which)
    state = {k: v.contiguous() for k, v in backbone.state_dict().items()}  # exactly timm's ViT's keys
    network = which if ("teacher" in raw or "student" in raw) else BACKBONE
    parameters = sum(v.numel() for v in state.values())
    provenance = export_provenance(raw, Path(checkpoint_path), network, arch, parameters)
    provenance["license"] = license_
    pulled = pulled_datasets(raw.get("config"))
    if named or pulled:
        provenance["datasets"] = dataset_entries([(d["repo"], d["revision"]) for d in [*named, *pulled]])
    config = timm_config(backbone.config, provenance)
    check_publishable(config)  # cleaned above (public_settings): never publish what is not provably clean

    try:
        from safetensors.torch import save
    except ImportError as e:
        raise WtoursError("--format timm needs the safetensors package", "pip install safetensors") from e
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).unlink(missing_ok=True)
        # as bytes: safetensors' save_file would create it 0600, the folder's other files are 0666 less the umask
        write_bytes_atomic(out / WEIGHTS_FILE, save(state, metadata={"format": "pt"}))
        card = out / CARD_FILE
        if not card.exists() or is_generated_model_card(card.read_text(encoding="utf-8", errors="replace")):
            write_bytes_atomic(card, render_model_card(config, repo=None, folder=out.name).encode("utf-8"))
        write_json_atomic(out / CONFIG_FILE, config)
    except BaseException:  # a full disk, Ctrl-C: no half export of a new folder stays under its name
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def export_backbone(checkpoint_path: str | os.PathLike, out: str | os.PathLike, which: str = "teacher") -> Path:
    """--format pth: the backbone's state dict, as timm's ViT of the same size names its weights; checked
    as --format timm's is (the weights must build a registered ViT) before anything is written."""
    backbone, _ = load_backbone(read_weights(checkpoint_path), None, which)
    save_file(Path(out), {k: v.contiguous() for k, v in backbone.state_dict().items()})
    return Path(out)


def timm_config(vit: ViTConfig, provenance: dict[str, Any]) -> dict[str, Any]:
    """config.json as timm's `save_config_for_hf` writes it, read by its `local-dir:` / `hf-hub:` loaders:
    no classifier (num_classes 0: the model returns the [CLS] feature), and the trainer's normalisation."""
    return {
        "architecture": TIMM_NAMES.get((vit.dim, vit.patch_size, vit.depth), GENERIC_TIMM_VIT), "num_classes": 0,
        "num_features": vit.dim, "global_pool": "token",
        "model_args": {"img_size": vit.image_size, "patch_size": vit.patch_size, "embed_dim": vit.dim,
                       "depth": vit.depth, "num_heads": vit.heads, "mlp_ratio": vit.mlp_ratio},
        "pretrained_cfg": {
            "input_size": [3, vit.image_size, vit.image_size], "fixed_input_size": True,
            "interpolation": "bicubic", "crop_pct": EVAL_CROP / EVAL_RESIZE, "crop_mode": "center",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "num_classes": 0, "pool_size": None,
            "first_conv": "patch_embed.proj", "classifier": "head", "custom_load": False,
        },
        EXPORT_KEY: provenance,
    }


def pulled_datasets(train: Any) -> list[dict[str, Any]]:
    """The Hub dataset repos the run's local shard sets were pulled from: `wtours pull` records the repo
    and revision in <root>/shards/<slug>/source.json ("pulled_from"). Untrusted files: invalid ids are skipped."""
    if not isinstance(train, dict) or not isinstance(train.get("shards"), (list, tuple)):
        return []
    root = train.get("root") if isinstance(train.get("root"), str) else None
    try:
        layout = Layout(root)
    except WtoursError:
        return []
    entries: list[dict[str, Any]] = []
    for spec in train["shards"]:
        if not isinstance(spec, str) or "/" in spec or ":" in spec or not spec:
            continue  # a path or a URL: not a shard set of the root
        with contextlib.suppress(WtoursError, ValueError, OSError):  # unreadable, an invalid repo id or revision
            record = read_json(layout.source_path(spec))
            origin = record.get(PULLED_FROM) if isinstance(record, dict) else None
            if isinstance(origin, dict) and isinstance(origin.get("repo"), str):
                revision = origin.get("revision") if isinstance(origin.get("revision"), str) else None
                entries += dataset_entries([(origin["repo"], revision)])
    return entries


def export_provenance(raw: dict[str, Any], checkpoint: Path, which: str, arch: str, parameters: int) -> dict[str, Any]:
    """What the model card says about the weights: the run's settings (from the checkpoint), its step,
    the figures logged by the run (k-NN, linear probe, DAVIS: log.jsonl beside the checkpoint) and k-NN results
    of `wtours eval knn` (<checkpoint stem>.knn.json beside it)."""
    config = raw.get("config")  # as config.json holds it (tuples as lists), whatever the checkpoint pickled
    config = public_settings(json.loads(json.dumps(config, default=str))) if isinstance(config, dict) else None
    step, epoch = (raw[k] if is_number(raw.get(k), int) else None for k in ("step", "epoch"))
    record: dict[str, Any] = {
        "arch": arch, "which": which, "parameters": parameters, "wtours_version": __version__,
        "step": step, "epoch": epoch, "train_config": config,
        **({f"{name}_logged": logged_figures(checkpoint.parent / RUN_LOG_FILE, step, name, keys)
            for name, keys in RUN_LOG_FIGURES.items()} if config else {}),
        "knn_eval": evaluated_knn(checkpoint.with_name(f"{checkpoint.stem}.knn.json"), which),
    }
    return {k: v for k, v in record.items() if v is not None}


def logged_figures(log: Path, step: int | None, name: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """An evaluation's line in log.jsonl (`wtours train --eval-every`: `<name>_<key>` figures) of these weights:
    the one logged at the checkpoint's step, else the last one before it (the card names its step); never one
    logged after it (other weights: the run went on after this checkpoint). None without a step to match."""
    if step is None or not log.is_file():
        return None
    best: dict[str, Any] | None = None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line of a killed run
        at = record.get("step") if isinstance(record, dict) else None
        if (is_number(at, int) and at <= step and all(is_number(record.get(f"{name}_{k}")) for k in keys)
                and (best is None or at >= best["step"])):  # a resumed run may log a step again: the later line
            epoch = record["epoch"] if is_number(record.get("epoch"), int) else None
            best = {"step": at, "epoch": epoch, **{k: record[f"{name}_{k}"] for k in keys}}
    return best


def evaluated_knn(path: Path, which: str) -> dict[str, Any] | None:
    """`wtours eval knn`'s result for this checkpoint and network; folder names only (no local paths)."""
    try:
        result = read_json(path)
    except WtoursError:
        return None
    if not isinstance(result, dict) or (which != BACKBONE and result.get("which", "teacher") != which):
        return None  # not a result, or of the other network (a bare backbone has one network)
    keep = ("top1", "top5", "k", "temperature", "classes", "train_images", "val_images", "resize", "crop")
    try:  # of the types config.json is checked for (model_card.check_export_config)
        scores = read_record(KnnScores, {k: result[k] for k in keep if k in result}, str(path), "")
    except WtoursError:
        return None  # not a result of wtours eval knn: hand-edited
    out = {k: v for k, v in asdict(scores).items() if v is not None}
    for key in ("train", "val"):
        if isinstance(result.get(key), str):
            out[key] = local_name(result[key])
    return out
