"""pretrain and finetune tasks: shards -> a member's checkpoints, resumable across pods."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from cloudml.errors import ConfigError
from cloudml.fileio import write_json
from cloudml.steps.common import (
    JSON_OPTIONS,
    _telemetry,
    collect_shards,
    config_from_json,
    copy_file,
)

log = logging.getLogger(__name__)


def _epoch_telemetry(stage: str, pipeline: str):
    """on_epoch callback: the epoch's metrics to the Pushgateway. The epoch's log line is
    written by the training loop (cloudml.training.loop.epoch_line), once."""
    telemetry = _telemetry(pipeline, stage)

    def on_epoch(rec: dict[str, Any]) -> None:
        telemetry.epoch(rec)

    return on_epoch


def member_seeds(seed: int, ensemble_size: int) -> list[int]:
    """The training seeds of an ensemble's members: seed, seed+1, ..., seed+K-1."""
    if ensemble_size < 1:
        raise ConfigError(f"ensemble_size: must be >= 1, got {ensemble_size}")
    return [int(seed) + i for i in range(int(ensemble_size))]


def _resumable(stage: str, pipeline: str, state_key: str, out_dir: Path, seed: int):
    """on_epoch for a training stage; with a state key (steps.common.training_state_key: code,
    config and data) and CLOUDML_STORE set, the stage state is first restored from the store
    (a retry on a new pod resumes) and then synced every epoch. The state is kept per member
    (its seed): the members of one run train side by side."""
    inner = _epoch_telemetry(stage, pipeline)
    if not state_key or not os.environ.get("CLOUDML_STORE"):
        return inner
    from cloudml.store.backends import open_store
    from cloudml.store.resume import restore_stage_state, state_prefix, sync_on_epoch

    store = open_store()
    prefix = state_prefix(pipeline, state_key, f"{stage}-seed{seed}")
    epoch = restore_stage_state(store, prefix, out_dir)
    if epoch:
        log.info("%s: resuming after epoch %d from %s", stage, epoch, store.describe(prefix))
    return sync_on_epoch(store, prefix, out_dir, inner)


def run_pretrain(
    shard_dirs: list[str], config_json: str, out_dir: Path, state_key: str = ""
) -> dict[str, Any]:
    """Pretrain on cfg.data.pretrain_flight's shard; checkpoints into out_dir."""
    from cloudml.threads import configure_torch_threads
    from cloudml.training.stages import pretrain

    configure_torch_threads()  # the task's CPUs, not every core of the node
    cfg = config_from_json(config_json)
    on_epoch = _resumable("pretrain", cfg.preset, state_key, Path(out_dir), cfg.train.seed)
    with _telemetry(cfg.preset, "pretrain").timed():
        summary = pretrain(collect_shards(shard_dirs), cfg, Path(out_dir), on_epoch=on_epoch)
    return _seal(Path(out_dir), summary)


def run_finetune(
    shard_dirs: list[str],
    config_json: str,
    pretrained_dir: Path,
    out_dir: Path,
    state_key: str = "",
) -> dict[str, Any]:
    """Fine-tune from pretrained_dir/model.pt on every flight but the validation flight."""
    from cloudml.threads import configure_torch_threads
    from cloudml.training.checkpoint import verify_stage_checkpoint
    from cloudml.training.stages import finetune

    configure_torch_threads()
    cfg = config_from_json(config_json)
    ckpt = verify_stage_checkpoint(pretrained_dir)  # missing, or changed since pretrain: refused
    on_epoch = _resumable("finetune", cfg.preset, state_key, Path(out_dir), cfg.train.seed)
    with _telemetry(cfg.preset, "finetune").timed():
        summary = finetune(collect_shards(shard_dirs), cfg, ckpt, Path(out_dir), on_epoch=on_epoch)
    _keep_pretrain_record(Path(pretrained_dir), Path(out_dir))
    return _seal(Path(out_dir), summary)


def _keep_pretrain_record(pretrained_dir: Path, out_dir: Path) -> None:
    """The member's pretrain history and summary travel in its finetuned artifact
    (pretrain_history.json, pretrain_summary.json): evaluate, which sees only the finetuned
    members, draws both stages' curves and times from them."""
    for name in ("history.json", "summary.json"):
        if (pretrained_dir / name).is_file():
            copy_file(pretrained_dir / name, out_dir / f"pretrain_{name}")


def _seal(out_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Record model.pt's sha256 in summary.json; the next stage checks it before loading."""
    from cloudml.training.checkpoint import checkpoint_sha256

    summary = {**summary, "model_sha256": checkpoint_sha256(out_dir)}
    write_json(out_dir / "summary.json", summary, **JSON_OPTIONS)
    return summary
