"""`wtours push --model DIR`: upload a `wtours export --format timm` folder to a Hub model repo, so
`timm.create_model("hf-hub:USER/NAME", pretrained=True)` loads it (docs/models.md).

Like the dataset push (push.py, and client.py's shared helpers): resumable by comparison, a dry run that
changes nothing, a README written by someone else kept, the namespace checked before anything is created,
the Hub's errors as one actionable line. Unlike it, the weights, config.json and card go up in one commit:
the repo never pairs weights with another config. A --license or --dataset given to the push is written
into the uploaded config.json and card."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wtours.errors import UsageError, WtoursError
from wtours.hfclient import hub_errors
from wtours.hub.client import (
    HubTarget,
    api,
    client_bars,
    prepare_repo,
    read_remote,
    remote_files,
)
from wtours.hub.model_card import (
    CARD_FILE,
    CONFIG_FILE,
    EXPORT_KEY,
    WEIGHTS_FILE,
    check_export_config,
    check_license,
    check_publishable,
    dataset_entries,
    is_export_config,
    is_generated_model_card,
    public_settings,
    render_model_card,
)
from wtours.hub.push import PushSummary, Upload
from wtours.layout import json_bytes, read_json

MODEL_REPO_TYPE = "model"
EXPORT_HINT = "make one with `wtours export CHECKPOINT --out DIR` (--format timm, the default for a folder name)"


@dataclass(frozen=True)
class ModelPushConfig:
    target: HubTarget  # a model repo
    folder: Path  # a `wtours export --format timm` folder
    private: bool = False
    dry_run: bool = False
    progress: bool = True
    license: str | None = None  # replaces the export's (`wtours push --model --license`)
    datasets: tuple[tuple[str, str | None], ...] = ()  # (USER/NAME, revision) added to the export's


def read_export(folder: Path) -> dict[str, Any]:
    """The folder's config.json, checked to be an export's, with the weights beside it."""
    if not folder.is_dir():
        raise UsageError(f"--model {folder} is not a folder", EXPORT_HINT)
    config = read_json(folder / CONFIG_FILE)
    if not is_export_config(config) or not isinstance(config, dict):
        why = f"no {CONFIG_FILE}" if config is None else f"its {CONFIG_FILE} was not written by `wtours export`"
        raise UsageError(f"{folder} is not a `wtours export --format timm` folder ({why})", EXPORT_HINT)
    check_export_config(config, str(folder / CONFIG_FILE))  # hand-edited? fails here naming the field
    check_publishable(config, str(folder / CONFIG_FILE))
    train = config[EXPORT_KEY].get("train_config")
    if train and public_settings(train) != train:  # cleaned once, at export: this one was not
        raise UsageError(f"{folder / CONFIG_FILE} holds local paths or credentials in the run's settings (an "
                         "export by an older wtours, or edited by hand); the Hub would serve them as they are",
                         f"export again into this folder: `wtours export CHECKPOINT --out {folder}`")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file() or weights.stat().st_size == 0:
        raise WtoursError(f"{weights} is missing or empty", f"export again: {EXPORT_HINT}")
    return config


def with_push_options(config: dict[str, Any], license_: str | None,
                      datasets: tuple[tuple[str, str | None], ...]) -> dict[str, Any]:
    """The export's config.json with the push's --license and --dataset recorded (both checked first)."""
    if license_ is None and not datasets:
        return config
    info = dict(config[EXPORT_KEY])
    if license_ is not None:
        info["license"] = check_license(license_)
    if datasets:
        known = [(d["repo"], d.get("revision")) for d in info.get("datasets") or []]
        info["datasets"] = dataset_entries([*known, *datasets])
    return {**config, EXPORT_KEY: info}


def local_files(folder: Path, config: dict[str, Any], repo: str, endpoint: str, changed: bool) -> list[Upload]:
    """What the repo should hold: the weights, config.json and the card. A README.md the export wrote is
    rendered again for the repo (its loading line, links); one written by its owner goes up as it is.
    config.json goes up as the export wrote it, or as `config` when the push `changed` it."""
    weights, card = folder / WEIGHTS_FILE, folder / CARD_FILE
    config_bytes = json_bytes(config) if changed else (folder / CONFIG_FILE).read_bytes()
    own = card.read_bytes() if card.is_file() else None
    if own is None or is_generated_model_card(own.decode("utf-8", "replace")):
        own = render_model_card(config, repo=repo, endpoint=endpoint).encode("utf-8")
    return [Upload(WEIGHTS_FILE, weights.stat().st_size, local=weights),
            Upload(CONFIG_FILE, len(config_bytes), data=config_bytes), Upload(CARD_FILE, len(own), data=own)]


def push_model(config: ModelPushConfig, say: Callable[[str], None] = print) -> PushSummary:
    target = config.target
    export = read_export(config.folder)
    pushed = with_push_options(export, config.license, config.datasets)
    prepare_repo(target, MODEL_REPO_TYPE, config.private, config.dry_run, say)
    remote = remote_files(target, MODEL_REPO_TYPE, missing_ok=True)  # a dry run's repo or branch: not there yet
    files = local_files(config.folder, pushed, target.repo, api(target).endpoint, changed=pushed is not export)
    uploads = [f for f in files if not f.is_in(remote)]
    if any(f.path == CARD_FILE for f in uploads) and CARD_FILE in remote and not is_generated_model_card(
            read_remote(target, CARD_FILE, MODEL_REPO_TYPE).decode("utf-8", "replace")):
        say(f"{CARD_FILE}: written by someone else, left as is (delete it to let wtours write the card)")
        uploads = [f for f in uploads if f.path != CARD_FILE]
    url = f"{api(target).endpoint}/{target.repo}"
    if uploads:  # else the CLI's summary line says "up to date"
        say(f"{target.repo}: to upload: " + ", ".join(f"{f.path} ({f.size / 1e6:.1f} MB)" for f in uploads))
    if config.dry_run or not uploads:
        return PushSummary(url)
    _commit(target, uploads, config.progress)
    return PushSummary(url, [f.path for f in uploads], bytes=sum(f.size for f in uploads), commits=1)


def _commit(target: HubTarget, uploads: list[Upload], progress: bool) -> None:
    """One commit: large files are sent first (preupload), then committed together."""
    from huggingface_hub import CommitOperationAdd

    hub = api(target)
    additions = [CommitOperationAdd(f.path, f.content()) for f in uploads]
    with client_bars(progress), hub_errors(f"push to {target.repo}", target, write=True):
        hub.preupload_lfs_files(target.repo, additions=additions, repo_type=MODEL_REPO_TYPE, revision=target.revision)
        hub.create_commit(target.repo, additions, repo_type=MODEL_REPO_TYPE, revision=target.revision,
                          commit_message=f"wtours push --model: {', '.join(f.path for f in uploads)}")
