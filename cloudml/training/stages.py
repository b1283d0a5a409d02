"""Pretrain and finetune stages (docs/architecture.md, 'Training procedure'): pick the
samples, build the model, fit, summarise.

    summary = pretrain({"30Oct24": Path("30Oct24.h5")}, cfg, Path("out/pretrain"))
    summary = finetune(shards, cfg, Path("out/pretrain/model.pt"), Path("out/finetune"))

Each stage writes out_dir/model.pt (best weights, self-describing), out_dir/last.pt (full
resume state, every epoch), history.json and summary.json. Re-running a stage with the same
out_dir resumes from last.pt (cloudml.training.loop.fit), or returns the summary at once when
the stage already finished there.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cloudml.config import Config
from cloudml.config_cli import add_config_args, config_from_args
from cloudml.errors import DataError
from cloudml.fileio import check_input_file, check_output_dir, write_json
from cloudml.model import CBHNet
from cloudml.training.checkpoint import check_resumable, load_checkpoint, load_weights
from cloudml.training.data import Pool, fit_scalers, load_pool, shards_from_paths, time_split
from cloudml.training.loop import TrainState, fit

log = logging.getLogger(__name__)


def _base(
    stage: str, cfg: Config, pool: Pool, scalers: dict[str, float], extra: dict[str, Any]
) -> dict[str, Any]:
    """The self-describing part of every checkpoint: stage, configs, input shape, scalers."""
    return {
        "format_version": 1, "stage": stage, "model_config": asdict(cfg.model),
        "config": {"preset": cfg.preset, **cfg.flat()},
        "temporal_frames": pool.temporal_frames, "frame_shape": list(pool.frame_shape),
        "scalers": scalers, **extra,
    }  # fmt: skip


def _summary(stage: str, state: TrainState, pool: Pool, n_train: int, n_val: int) -> dict[str, Any]:
    """summary.json of a finished fit."""
    return {
        "stage": stage, "best_epoch": state.best_epoch, "best_selection_loss": state.best_selection_loss,
        "epochs_run": state.epoch, "stopped_early": state.stopped_early,
        "lr_reached": max((h["lr"] for h in state.history), default=0.0),
        "seconds": round(state.elapsed_s, 3), "n_train": int(n_train), "n_val": int(n_val),
        "samples_per_s": round(state.train_samples / max(state.train_s, 1e-9), 2),
        "global_steps": state.global_step, "flights": pool.flights,
    }  # fmt: skip


def _run_stage(
    stage: str,
    *,
    pool: Pool,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: Config,
    out_dir: Path,
    weights: np.ndarray | None = None,
    init: dict[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Scalers from the training samples, the model (from `init` weights when given), fit,
    summary.json. `extra` entries go into every checkpoint (finetune: the pretrained path)."""
    extra = {} if extra is None else extra
    scalers = fit_scalers(pool.cbh_km[train_idx], pool.sza_deg[train_idx])
    torch.manual_seed(cfg.train.seed)
    net = CBHNet(cfg.model, pool.temporal_frames)
    if init is not None:
        load_weights(net, init, extra.get("pretrained", "pretrained weights"))
    base = _base(stage, cfg, pool, scalers, extra)
    log.info(
        "%s: %d training / %d selection-split samples of %s, frames %dx%d",
        stage,
        len(train_idx),
        len(val_idx),
        ",".join(pool.flights),
        *pool.frame_shape,
    )
    state = fit(
        stage=stage, net=net, pool=pool, train_idx=train_idx, val_idx=val_idx, weights=weights,
        scalers=scalers, cfg=cfg, out_dir=out_dir, base=base, on_epoch=on_epoch,
    )  # fmt: skip
    summary = _summary(stage, state, pool, len(train_idx), len(val_idx))
    write_json(out_dir / "summary.json", summary, indent=2)
    return summary


def _finished(stage: str, cfg: Config, out_dir: Path) -> dict[str, Any] | None:
    """summary.json of this stage already finished in out_dir with the same settings
    (re-running returns at once); None when there is nothing finished to return."""
    s, last = out_dir / "summary.json", out_dir / "last.pt"
    if not last.exists():
        return None
    ck = load_checkpoint(last)
    check_resumable(ck, {"stage": stage, "config": {"preset": cfg.preset, **cfg.flat()}}, last)
    return json.loads(s.read_text()) if ck["state"]["finished"] and s.exists() else None


def pretrain(
    shards: dict[str, Path],
    cfg: Config,
    out_dir: Path,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Train on cfg.data.pretrain_flight only, time-ordered (1-val_fraction)/val_fraction split."""
    out_dir = Path(out_dir)
    if (done := _finished("pretrain", cfg, out_dir)) is not None:
        log.info("pretrain: %s already finished", out_dir)
        return done
    flight = cfg.data.pretrain_flight
    pool = load_pool(shards, [flight], cfg.data.temporal_frames)
    train_idx, val_idx = time_split(pool.time_utc, cfg.train.val_fraction)
    return _run_stage(
        "pretrain", pool=pool, train_idx=train_idx, val_idx=val_idx, cfg=cfg, out_dir=out_dir,
        on_epoch=on_epoch,
    )  # fmt: skip


def _finetune_split(pool: Pool, cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train_idx, val_idx, weights): the time-ordered tail (val_fraction) of EACH flight for
    validation, the rest for training, overweight_flight's samples weighted overweight_factor."""
    tr, va = [], []
    for f in pool.flights:
        rows = pool.of_flight(f)
        a, b = time_split(pool.time_utc[rows], cfg.train.val_fraction)
        tr.append(rows[a])
        va.append(rows[b])
    train_idx, val_idx = np.concatenate(tr), np.concatenate(va)
    d = cfg.data
    code = pool.flights.index(d.overweight_flight) if d.overweight_flight in pool.flights else -1
    weights = np.where(pool.flight_code[train_idx] == code, cfg.train.overweight_factor, 1.0)
    return train_idx, val_idx, weights


def finetune(
    shards: dict[str, Path], cfg: Config, pretrained: Path, out_dir: Path,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Start from `pretrained`; train on every flight except validation_flight (never read,
    even if passed), overweight_flight drawn overweight_factor times as often; select the
    best epoch on the time-ordered tail (val_fraction) of EACH training flight."""
    out_dir = Path(out_dir)
    if (done := _finished("finetune", cfg, out_dir)) is not None:
        log.info("finetune: %s already finished", out_dir)
        return done
    d = cfg.data
    if d.validation_flight in shards:
        log.info(
            "finetune: skipping %s (the validation flight is never trained on)", d.validation_flight
        )
    flights = [f for f in d.training_flights if f in shards]
    missing = [f for f in d.training_flights if f not in shards]
    if missing:
        log.warning("finetune: no shard for %s; training on %s", missing, flights)
    if not flights:
        raise DataError(f"finetune: no training-flight shard among {sorted(shards)}")
    ck = load_checkpoint(Path(pretrained))
    pool = load_pool(shards, flights, d.temporal_frames)
    train_idx, val_idx, weights = _finetune_split(pool, cfg)
    return _run_stage(
        "finetune", pool=pool, train_idx=train_idx, val_idx=val_idx, cfg=cfg, out_dir=out_dir,
        weights=weights, init=ck["model"], extra={"pretrained": str(pretrained)},
        on_epoch=on_epoch,
    )  # fmt: skip


# --- CLI ------------------------------------------------------------------------------------
def _cmd(args: argparse.Namespace) -> int:
    """`cloudml pretrain` / `cloudml finetune`: run the stage, print its summary."""
    check_output_dir(args.out)  # before any work: a file in the way
    for path in (*args.shard, *([args.pretrained] if args.command == "finetune" else [])):
        check_input_file(path, "shard" if path in args.shard else "checkpoint")
    cfg = config_from_args(args)
    shards = shards_from_paths(args.shard)
    if args.command == "pretrain":
        summary = pretrain(shards, cfg, Path(args.out))
    else:
        summary = finetune(shards, cfg, Path(args.pretrained), Path(args.out))
    print(json.dumps(summary, indent=2))
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    """The `pretrain` and `finetune` subcommands."""
    for name, help_ in (
        ("pretrain", "train on the pretrain flight"),
        ("finetune", "finetune on all training flights"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "--shard",
            action="append",
            required=True,
            metavar="FILE",
            help="flight shard (repeatable)",
        )
        if name == "finetune":
            p.add_argument("--pretrained", required=True, metavar="FILE", help="pretrain model.pt")
        p.add_argument(
            "--out", required=True, metavar="DIR", help="output directory (re-run resumes)"
        )
        add_config_args(p)
        p.set_defaults(func=_cmd)


__all__ = ["pretrain", "finetune"]
