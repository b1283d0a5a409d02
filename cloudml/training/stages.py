"""Pretrain and finetune stages (DESIGN §6): setup -> main -> fit, small pure helpers.

    summary = pretrain({"30Oct24": Path("30Oct24.h5")}, cfg, Path("out/pretrain"))
    summary = finetune(shards, cfg, Path("out/pretrain/model.pt"), Path("out/finetune"))

Each stage writes out_dir/model.pt (best weights, self-describing), out_dir/last.pt (full
resume state, every epoch), history.json and summary.json. Re-running a stage with the same
out_dir resumes from last.pt; data order, augmentation and dropout are seeded per epoch from
(seed, epoch), so a resumed run ends exactly where an uninterrupted one does (CPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from cloudml.config import Config, TrainConfig
from cloudml.config_cli import add_config_args, config_from_args
from cloudml.errors import ConfigError, DataError
from cloudml.fileio import write_json
from cloudml.metrics import regression_metrics
from cloudml.model import CBHNet, configure_checkpointing, encode_scalars, maybe_compile
from cloudml.training.checkpoint import load_checkpoint, load_weights, save_checkpoint
from cloudml.training.data import (
    Pool,
    augment,
    batches,
    epoch_order,
    fit_scalers,
    load_pool,
    shard_flight,
    time_split,
)

log = logging.getLogger(__name__)
EVAL_PIXEL_BUDGET = 20_000_000  # frames*pixels per evaluation batch (bounds activation memory)
AUG_P_TRANSPOSE = 0.5  # share of training batches seen transposed (train_data.augment)
BN_RECAL_SAMPLES = 400  # training samples whose batch statistics re-estimate BatchNorm per epoch


# --- pure helpers ---------------------------------------------------------------------------
def lr_at(step: int, cfg: TrainConfig) -> float:
    """Warm-up learning rate for optimizer step `step` (0-based): linear from lr/warmup_steps
    to lr over warmup_steps steps, then lr (ReduceLROnPlateau takes over from there)."""
    if cfg.warmup_steps <= 0 or step >= cfg.warmup_steps:
        return cfg.learning_rate
    return cfg.learning_rate * (step + 1) / cfg.warmup_steps


def loss_fn(pred: torch.Tensor, target: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Huber(huber_delta) or loss_alpha*MSE + (1-loss_alpha)*MAE, on the standardised target."""
    if cfg.loss_type == "huber":
        return torch.nn.functional.huber_loss(pred, target, delta=cfg.huber_delta)
    err = pred - target
    return cfg.loss_alpha * err.pow(2).mean() + (1 - cfg.loss_alpha) * err.abs().mean()


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed for one epoch's order, augmentation and dropout: resume replays it exactly."""
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**62)


def improved(val_loss: float, best: float, min_delta: float) -> bool:
    return val_loss < best - min_delta


def device_for() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- batches --------------------------------------------------------------------------------
def gather_batch(pool: Pool, idx: np.ndarray) -> torch.Tensor:
    """(B, T, H, W) windows of samples `idx` (one gather over the in-memory frame table)."""
    return pool.frames[pool.index[torch.as_tensor(idx)]]


def targets(pool: Pool, idx: np.ndarray, scalers: dict[str, float]) -> torch.Tensor:
    y = (pool.cbh_km[idx] - scalers["cbh_mean"]) / scalers["cbh_std"]
    return torch.as_tensor(y, dtype=torch.float32)


def scalar_inputs(sza: torch.Tensor, saa: torch.Tensor, scalers: dict[str, float]) -> torch.Tensor:
    return encode_scalars(sza.float(), saa.float(), scalers["sza_mean"], scalers["sza_std"])


@torch.no_grad()
def predict(
    net: torch.nn.Module,
    pool: Pool,
    idx: np.ndarray,
    scalers: dict[str, float],
    device: torch.device,
) -> np.ndarray:
    """Standardised predictions (n,) for samples `idx`, eval mode, bounded batch memory."""
    net.eval()
    t, (h, w) = pool.temporal_frames, pool.frame_shape
    bs = int(max(1, min(512, EVAL_PIXEL_BUDGET // (t * h * w))))
    out = []
    for start in range(0, len(idx), bs):
        b = idx[start : start + bs]
        x = gather_batch(pool, b).to(device, non_blocking=True)
        s = scalar_inputs(
            torch.as_tensor(pool.sza_deg[b]), torch.as_tensor(pool.saa_deg[b]), scalers
        )
        with _autocast(device):
            out.append(net(x, s.to(device)).float().cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


@torch.no_grad()
def recalibrate_bn(
    net: torch.nn.Module,
    pool: Pool,
    idx: np.ndarray,
    scalers: dict[str, float],
    batch_size: int,
    device: torch.device,
) -> None:
    """Re-estimate BatchNorm running statistics for the weights as they are now ("precise
    BN", Wu & Johnson 2021): forward passes with BatchNorm in train mode and everything else
    as in evaluation (dropout off, no augmentation) over training batches, averaged with
    equal weight.

    Dropout off: every BatchNorm after a dropout (blocks 2-3, the head's second layer) would
    otherwise record the variance of dropped-and-rescaled inputs, which evaluation never
    sees (the "variance shift" of dropout before BN, Li et al. 2019).

    Why: the momentum-0.1 running averages lag weights that move every step. Measured on the
    local campaign (30Oct24 pretrain, tuned, before this fix): eval-mode R² on the model's
    own TRAINING samples was -0.68 while train-mode batch statistics gave 0.71, and validation
    loss jumped 0.71 -> 2.79 between epochs; re-estimating the statistics lifted the same
    weights to 0.32 on training samples (best epoch: 0.32 -> 0.67).
    """
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative (equal-weight) average over the batches below
    net.eval()
    for m in bns:
        m.train()
    # same activation bound as `predict` (at local scale that is still batch_size; a full-size
    # batch of 20 would peak at ~16 GiB without gradients, measured)
    t, (h, w) = pool.temporal_frames, pool.frame_shape
    bs = int(min(batch_size, max(2, EVAL_PIXEL_BUDGET // (t * h * w))))
    for b in batches(torch.as_tensor(idx), bs):
        b = b.numpy()
        s = scalar_inputs(
            torch.as_tensor(pool.sza_deg[b]), torch.as_tensor(pool.saa_deg[b]), scalers
        )
        with _autocast(device):
            net(gather_batch(pool, b).to(device), s.to(device))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom


def _autocast(device: torch.device, enabled: bool = True) -> Any:
    """bf16 autocast on CUDA only; a no-op context on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


# --- the loop -------------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *map(float, np_state[2:]),
        ],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def fit(
    stage: str,
    net: CBHNet,
    pool: Pool,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    weights: np.ndarray | None,
    scalers: dict[str, float],
    cfg: Config,
    out_dir: Path,
    base: dict[str, Any],
    on_epoch: Callable[[dict], None] | None,
) -> dict[str, Any]:
    """Epoch loop with warm-up, plateau schedule, early stopping and per-epoch checkpoints.

    `base` is the self-describing part of every checkpoint (configs, stage, scalers).
    Resumes from out_dir/last.pt when it exists.
    """
    tc = cfg.train
    device = device_for()
    net.to(device)
    configure_checkpointing(net, pool.frame_shape)
    model = maybe_compile(net, device)
    # the weights judged, checkpointed and shipped: an exponential moving average of the
    # training weights (Polyak averaging) when ema_decay > 0, else the training weights
    ema = (
        AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay))
        if tc.ema_decay > 0
        else None
    )
    kept = net if ema is None else ema.module  # its state_dict is what model.pt holds
    judged = model if ema is None else ema.module  # what validation runs (compiled or not)
    opt = torch.optim.AdamW(net.parameters(), lr=lr_at(0, tc), weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=tc.plateau_factor, patience=tc.plateau_patience
    )
    st: dict[str, Any] = {
        "epoch": 0, "global_step": 0, "best_val_loss": float("inf"), "best_epoch": 0,
        "bad_epochs": 0, "history": [], "elapsed_s": 0.0, "train_samples": 0, "train_s": 0.0,
        "stopped_early": False, "finished": False,
    }  # fmt: skip
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    last = out_dir / "last.pt"
    if last.exists():
        ck = load_checkpoint(last)
        _check_resumable(ck, base, last)
        load_weights(net, ck["model"], last)
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        best_state = ck["best_model"]
        st.update(ck["state"])
        _set_rng_state(ck["rng"])
        log.info(
            "%s: resuming from %s after epoch %d (step %d)",
            stage,
            last,
            st["epoch"],
            st["global_step"],
        )

    n_train = len(train_idx)
    tgt_val = pool.cbh_km[val_idx]
    t_start = time.perf_counter() - st["elapsed_s"]
    while not st["finished"]:
        epoch = st["epoch"] + 1
        seed = epoch_seed(tc.seed, epoch)
        torch.manual_seed(seed)  # dropout
        gen = torch.Generator().manual_seed(seed + 1)  # order + augmentation
        order = train_idx[epoch_order(n_train, weights, gen).numpy()]
        model.train()
        t0 = time.perf_counter()
        loss_sum, n_seen = 0.0, 0
        bar = tqdm(
            total=n_train, desc=f"{stage} epoch {epoch}", unit="sample", leave=False,
            disable=not sys.stderr.isatty(), file=sys.stderr,
        )  # fmt: skip
        for bidx in batches(torch.as_tensor(order), tc.batch_size):
            b = bidx.numpy()
            x = gather_batch(pool, b)  # (B, T, H, W)
            sza, saa = torch.as_tensor(pool.sza_deg[b]), torch.as_tensor(pool.saa_deg[b])
            if cfg.data.augment:
                x, saa = augment(x, saa, gen, p_transpose=AUG_P_TRANSPOSE)
            s = scalar_inputs(sza, saa, scalers)  # (B, 3)
            y = targets(pool, b, scalers)
            for g in opt.param_groups:
                if st["global_step"] < tc.warmup_steps:
                    g["lr"] = lr_at(st["global_step"], tc)
            with _autocast(device, tc.mixed_precision):
                loss = loss_fn(model(x.to(device), s.to(device)).float(), y.to(device), tc)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
            opt.step()
            if ema is not None:
                ema.update_parameters(net)
            st["global_step"] += 1
            loss_sum += loss.item() * len(b)
            n_seen += len(b)
            bar.update(len(b))
        bar.close()
        train_s = time.perf_counter() - t0
        lr_used = opt.param_groups[0]["lr"]
        recalibrate_bn(judged, pool, order[:BN_RECAL_SAMPLES], scalers, tc.batch_size, device)

        pred = predict(judged, pool, val_idx, scalers, device)
        val_loss = float(
            loss_fn(torch.as_tensor(pred), targets(pool, val_idx, scalers).double(), tc)
        )
        val_r2 = regression_metrics(tgt_val, pred * scalers["cbh_std"] + scalers["cbh_mean"])["r2"]
        if st["global_step"] >= tc.warmup_steps:
            sched.step(val_loss)  # plateau schedule only after warm-up
        better = improved(val_loss, st["best_val_loss"], tc.early_stopping_min_delta)
        if better:
            st.update(best_val_loss=val_loss, best_epoch=epoch, bad_epochs=0)
            best_state = {k: v.detach().clone() for k, v in kept.state_dict().items()}
        else:
            st["bad_epochs"] += 1
        seconds = time.perf_counter() - t0
        row = {
            "stage": stage, "epoch": epoch, "train_loss": loss_sum / max(n_seen, 1),
            "val_loss": val_loss, "val_r2": val_r2, "lr": lr_used, "seconds": seconds,
        }  # fmt: skip
        st["history"].append(row)
        st["epoch"] = epoch
        st["train_samples"] += n_seen
        st["train_s"] += train_s
        st["stopped_early"] = st["bad_epochs"] >= tc.early_stopping_patience
        st["finished"] = st["stopped_early"] or epoch >= tc.epochs
        st["elapsed_s"] = time.perf_counter() - t_start
        if better:
            save_checkpoint(out_dir / "model.pt", _model_ckpt(base, best_state, st))
        save_checkpoint(last, {
            **base, "model": net.state_dict(), "best_model": best_state,
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "state": st, "rng": _rng_state(), **({} if ema is None else {"ema": ema.state_dict()}),
        })  # fmt: skip
        write_json(out_dir / "history.json", st["history"], indent=2)
        log.info(
            "%s epoch %d/%d train %.4f val %.4f R2 %.3f lr %.2e %.1fs (%.0f samples/s)%s",
            stage, epoch, tc.epochs, row["train_loss"], val_loss, val_r2, lr_used, seconds,
            n_seen / max(train_s, 1e-9), " *" if better else "",
        )  # fmt: skip
        if on_epoch is not None:
            on_epoch(dict(row))
    if st["stopped_early"]:
        log.info("%s: early stop after epoch %d (best %d)", stage, st["epoch"], st["best_epoch"])
    return st


def _model_ckpt(
    base: dict[str, Any], weights: dict[str, torch.Tensor], st: dict[str, Any]
) -> dict[str, Any]:
    return {
        **base, "model": weights, "epoch": st["best_epoch"], "global_step": st["global_step"],
        "best_val_loss": st["best_val_loss"], "history": st["history"],
    }  # fmt: skip


def _check_resumable(ck: dict[str, Any], base: dict[str, Any], path: Path) -> None:
    """A last.pt from another stage or configuration must not be silently continued."""
    if ck.get("stage") != base["stage"]:
        raise ConfigError(
            f"{path}: holds stage {ck.get('stage')!r}, not {base['stage']!r}; use another --out"
        )
    diff = sorted(k for k in base["config"] if ck["config"].get(k) != base["config"][k])
    if diff:
        raise ConfigError(
            f"{path}: was written with different settings for {diff}; use another --out"
        )


# --- stages ---------------------------------------------------------------------------------
def _base(
    stage: str, cfg: Config, pool: Pool, scalers: dict[str, float], extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "format_version": 1, "stage": stage, "model_config": asdict(cfg.model),
        "config": {"preset": cfg.preset, **cfg.flat()},
        "temporal_frames": pool.temporal_frames, "frame_shape": list(pool.frame_shape),
        "scalers": scalers, **extra,
    }  # fmt: skip


def _run_stage(
    stage: str, pool: Pool, train_idx: np.ndarray, val_idx: np.ndarray, weights: np.ndarray | None,
    cfg: Config, out_dir: Path, init: dict[str, torch.Tensor] | None, extra: dict[str, Any],
    on_epoch: Callable[[dict], None] | None,
) -> dict[str, Any]:  # fmt: skip
    """main: scalers, model, fit, summary.json."""
    scalers = fit_scalers(pool.cbh_km[train_idx], pool.sza_deg[train_idx])
    torch.manual_seed(cfg.train.seed)
    net = CBHNet(cfg.model, pool.temporal_frames)
    if init is not None:
        load_weights(net, init, extra.get("pretrained", "pretrained weights"))
    base = _base(stage, cfg, pool, scalers, extra)
    log.info(
        "%s: %d train / %d val samples of %s, frames %dx%d",
        stage,
        len(train_idx),
        len(val_idx),
        ",".join(pool.flights),
        *pool.frame_shape,
    )
    st = fit(stage, net, pool, train_idx, val_idx, weights, scalers, cfg, out_dir, base, on_epoch)
    summary = {
        "stage": stage, "best_epoch": st["best_epoch"], "best_val_loss": st["best_val_loss"],
        "epochs_run": st["epoch"], "stopped_early": st["stopped_early"],
        "lr_reached": max((h["lr"] for h in st["history"]), default=0.0),
        "seconds": round(st["elapsed_s"], 3), "n_train": int(len(train_idx)), "n_val": int(len(val_idx)),
        "samples_per_s": round(st["train_samples"] / max(st["train_s"], 1e-9), 2),
        "global_steps": st["global_step"], "flights": pool.flights,
    }  # fmt: skip
    write_json(out_dir / "summary.json", summary, indent=2)
    return summary


def _finished(stage: str, cfg: Config, out_dir: Path) -> dict[str, Any] | None:
    """summary.json of this stage already finished in out_dir with the same settings
    (re-running returns at once); None when there is nothing finished to return."""
    s, last = out_dir / "summary.json", out_dir / "last.pt"
    if not last.exists():
        return None
    ck = load_checkpoint(last)
    _check_resumable(ck, {"stage": stage, "config": {"preset": cfg.preset, **cfg.flat()}}, last)
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
    return _run_stage("pretrain", pool, train_idx, val_idx, None, cfg, out_dir, None, {}, on_epoch)


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
    tr, va = [], []
    for f in flights:
        rows = pool.of_flight(f)
        a, b = time_split(pool.time_utc[rows], cfg.train.val_fraction)
        tr.append(rows[a])
        va.append(rows[b])
    train_idx, val_idx = np.concatenate(tr), np.concatenate(va)
    code = pool.flights.index(d.overweight_flight) if d.overweight_flight in pool.flights else -1
    weights = np.where(pool.flight_code[train_idx] == code, cfg.train.overweight_factor, 1.0)
    extra = {"pretrained": str(pretrained)}
    return _run_stage(
        "finetune", pool, train_idx, val_idx, weights, cfg, out_dir, ck["model"], extra, on_epoch
    )


# --- CLI ------------------------------------------------------------------------------------
def shards_from_paths(paths: list[str]) -> dict[str, Path]:
    """{flight: path} from shard files, the flight read from each file."""
    out: dict[str, Path] = {}
    for p in map(Path, paths):
        flight = shard_flight(p)
        if flight in out:
            raise DataError(f"{p}: flight {flight} already given by {out[flight]}")
        out[flight] = p
    return out


def _cmd(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    shards = shards_from_paths(args.shard)
    if args.command == "pretrain":
        summary = pretrain(shards, cfg, Path(args.out))
    else:
        summary = finetune(shards, cfg, Path(args.pretrained), Path(args.out))
    print(json.dumps(summary, indent=2))
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
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


__all__ = ["pretrain", "finetune", "lr_at", "loss_fn"]
