"""The training loop (docs/architecture.md, 'Training procedure'): warm-up, plateau schedule,
early stopping, EMA weights, BatchNorm re-estimation, per-epoch checkpoints and exact resume
(cloudml.training.state).

    state = fit(stage="pretrain", net=net, pool=pool, train_idx=tr, val_idx=va, weights=None,
                scalers=scalers, cfg=cfg, out_dir=Path("out/pretrain"), base=base)

Every epoch writes out_dir/last.pt (full resume state), history.json, and model.pt when the
epoch is the best so far. Data order, augmentation and dropout are seeded per epoch from
(seed, epoch), so a run resumed from last.pt ends exactly where an uninterrupted one does (CPU).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from cloudml.config import Config, TrainConfig
from cloudml.console import emit
from cloudml.metrics import regression_metrics
from cloudml.model import (
    CBHNet,
    bf16_applies,
    configure_checkpointing,
    encode_scalars,
    maybe_compile,
)
from cloudml.training.data import Pool, augment, batches, epoch_order
from cloudml.training.state import Learner, TrainState, resume_from, save_epoch

log = logging.getLogger(__name__)
EVAL_PIXEL_BUDGET = 20_000_000  # frames*pixels per evaluation batch (bounds activation memory)
AUG_P_TRANSPOSE = 0.5  # share of training batches seen transposed (data.augment)
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


def improved(sel_loss: float, best: float, min_delta: float) -> bool:
    """Whether `sel_loss` beats the best so far by more than `min_delta`."""
    return sel_loss < best - min_delta


def epoch_line(
    row: dict[str, Any], state: TrainState, tc: TrainConfig, better: bool, speed: float
) -> str:
    """The one log line of an epoch: its losses, whether it is the best so far (else the
    best and the patience left), the learning rate and the speed."""
    if better:
        best = "new best"
    else:
        left = tc.early_stopping_patience - state.bad_epochs
        best = f"best {state.best_selection_loss:.4f} at epoch {state.best_epoch}, patience {left} left"
    return (
        f"{row['stage']} epoch {row['epoch']} (at most {tc.epochs}): train loss "
        f"{row['train_loss']:.4f}, selection-split loss {row['selection_loss']:.4f} ({best}), "
        f"selection-split R² {row['selection_r2']:.3f}, lr {row['lr']:.2e}, "
        f"{row['seconds']:.1f} s ({speed:.0f} samples/s)"
    )


def device_for() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- batches --------------------------------------------------------------------------------
def gather_batch(pool: Pool, idx: np.ndarray) -> torch.Tensor:
    """(B, T, H, W) windows of samples `idx` (one gather over the in-memory frame table)."""
    return pool.frames[pool.index[torch.as_tensor(idx)]]


def targets(pool: Pool, idx: np.ndarray, scalers: dict[str, float]) -> torch.Tensor:
    """Standardised cloud base (float32) of samples `idx`."""
    y = (pool.cbh_km[idx] - scalers["cbh_mean"]) / scalers["cbh_std"]
    return torch.as_tensor(y, dtype=torch.float32)


def scalar_inputs(sza: torch.Tensor, saa: torch.Tensor, scalers: dict[str, float]) -> torch.Tensor:
    """The model's (B, 3) scalar input: standardised SZA, sin and cos of SAA."""
    return encode_scalars(sza.float(), saa.float(), scalers["sza_mean"], scalers["sza_std"])


@torch.no_grad()
def predict(
    net: torch.nn.Module,
    pool: Pool,
    idx: np.ndarray,
    scalers: dict[str, float],
    device: torch.device,
    mixed_precision: bool = True,
    mixed_precision_cpu: bool = False,
) -> np.ndarray:
    """Standardised predictions (n,) for samples `idx`, eval mode, bounded batch memory;
    bf16 autocast as the model's config asks where it applies (_autocast)."""
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
        with _autocast(device, mixed_precision, mixed_precision_cpu):
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
    mixed_precision: bool = True,
    mixed_precision_cpu: bool = False,
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
        with _autocast(device, mixed_precision, mixed_precision_cpu):
            net(gather_batch(pool, b).to(device), s.to(device))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom


def _autocast(device: torch.device, enabled: bool = True, on_cpu: bool = False) -> Any:
    """bf16 autocast (mixed_precision) on CUDA, and on CPU only when asked (`on_cpu`:
    mixed_precision_cpu) and bf16 is native there (AVX512-BF16 or AMX,
    cloudml.model.bf16_applies); a no-op context elsewhere. Weights, optimizer state, EMA
    and the loss stay float32. Measured on the 2-core AVX512-BF16 EPYC at local scale: steps
    1.4x faster, but the trained models' 12Feb25 R² lower on average (docs/draws.md), hence
    off on CPU by default."""
    on = enabled and bf16_applies(device.type, on_cpu)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


# --- the fit ------------------------------------------------------------------------------
def _learner(net: CBHNet, frame_shape: tuple[int, int], tc: TrainConfig) -> Learner:
    """Move `net` to the device and build its optimizer, schedule and (optional) EMA copy."""
    device = device_for()
    net.to(device)
    configure_checkpointing(net, frame_shape)
    model = maybe_compile(net, device)
    # the weights judged, checkpointed and shipped: an exponential moving average of the
    # training weights (Polyak averaging) when ema_decay > 0, else the training weights
    ema = (
        AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay))
        if tc.ema_decay > 0
        else None
    )
    opt = torch.optim.AdamW(net.parameters(), lr=lr_at(0, tc), weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=tc.plateau_factor, patience=tc.plateau_patience
    )
    best = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return Learner(net, model, ema, opt, sched, device, best)


def _train_epoch(
    learner: Learner,
    pool: Pool,
    order: np.ndarray,
    gen: torch.Generator,
    scalers: dict[str, float],
    cfg: Config,
    state: TrainState,
    desc: str,
) -> tuple[float, int]:
    """One pass over `order` (augmented with `gen`); returns (sum of batch loss x size,
    samples seen). Counts optimizer steps in state.global_step."""
    tc, net, opt, device = cfg.train, learner.net, learner.opt, learner.device
    learner.model.train()
    loss_sum, n_seen = 0.0, 0
    bar = tqdm(
        total=len(order), desc=desc, unit="sample", leave=False,
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
            if state.global_step < tc.warmup_steps:
                g["lr"] = lr_at(state.global_step, tc)
        with _autocast(device, tc.mixed_precision, tc.mixed_precision_cpu):
            loss = loss_fn(learner.model(x.to(device), s.to(device)).float(), y.to(device), tc)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
        opt.step()
        if learner.ema is not None:
            learner.ema.update_parameters(net)
        state.global_step += 1
        loss_sum += loss.item() * len(b)
        n_seen += len(b)
        bar.update(len(b))
    bar.close()
    return loss_sum, n_seen


def _validate(
    learner: Learner, pool: Pool, val_idx: np.ndarray, scalers: dict[str, float], tc: TrainConfig
) -> tuple[float, float]:
    """(loss on the standardised target, R² in km) of the judged weights on `val_idx`."""
    pred = predict(
        learner.judged, pool, val_idx, scalers, learner.device, tc.mixed_precision,
        tc.mixed_precision_cpu,
    )  # fmt: skip
    sel_loss = float(loss_fn(torch.as_tensor(pred), targets(pool, val_idx, scalers).double(), tc))
    km = pred * scalers["cbh_std"] + scalers["cbh_mean"]
    return sel_loss, regression_metrics(pool.cbh_km[val_idx], km)["r2"]


def _select(
    learner: Learner, state: TrainState, sel_loss: float, epoch: int, tc: TrainConfig
) -> bool:
    """Step the plateau schedule (after warm-up only) and keep the weights when `sel_loss`
    improved; returns whether it did. A non-improving epoch counts towards early stopping,
    during warm-up only when early_stopping_after_warmup is off."""
    if state.global_step >= tc.warmup_steps:
        learner.sched.step(sel_loss)  # plateau schedule only after warm-up
    better = improved(sel_loss, state.best_selection_loss, tc.early_stopping_min_delta)
    if better:
        state.best_selection_loss, state.best_epoch, state.bad_epochs = sel_loss, epoch, 0
        learner.best_state = {k: v.detach().clone() for k, v in learner.kept.state_dict().items()}
    elif state.global_step >= tc.warmup_steps or not tc.early_stopping_after_warmup:
        state.bad_epochs += 1
    return better


# --- the loop -------------------------------------------------------------------------------
def fit(
    *,
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
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainState:
    """Epoch loop with warm-up, plateau schedule, early stopping and per-epoch checkpoints.

    `weights` (per training sample, or None) make the epoch order weighted draws; `base` is
    the self-describing part of every checkpoint (configs, stage, scalers); `on_epoch` gets
    each epoch's history row after its checkpoint is written. Resumes from out_dir/last.pt
    when it exists. Each epoch is logged once (`epoch_line`); under `cloudml run`
    (CLOUDML_PROGRESS=1) the start and every epoch also go out as progress events
    (cloudml.console.emit) for its live line.
    """
    tc = cfg.train
    learner = _learner(net, pool.frame_shape, tc)
    state = resume_from(out_dir / "last.pt", learner, base, stage)
    t_start = time.perf_counter() - state.elapsed_s
    emit({"event": "start", "stage": stage, "seed": tc.seed, "epochs": tc.epochs,
          "epoch": state.epoch, "n_train": len(train_idx)})  # fmt: skip
    while not state.finished:
        epoch = state.epoch + 1
        seed = epoch_seed(tc.seed, epoch)
        torch.manual_seed(seed)  # dropout
        gen = torch.Generator().manual_seed(seed + 1)  # order + augmentation
        order = train_idx[epoch_order(len(train_idx), weights, gen).numpy()]
        t0 = time.perf_counter()
        desc = f"{stage} epoch {epoch}"
        loss_sum, n_seen = _train_epoch(learner, pool, order, gen, scalers, cfg, state, desc)
        train_s = time.perf_counter() - t0
        lr_used = learner.opt.param_groups[0]["lr"]
        recalibrate_bn(
            learner.judged, pool, order[:BN_RECAL_SAMPLES], scalers, tc.batch_size,
            learner.device, tc.mixed_precision, tc.mixed_precision_cpu,
        )  # fmt: skip
        sel_loss, sel_r2 = _validate(learner, pool, val_idx, scalers, tc)
        better = _select(learner, state, sel_loss, epoch, tc)
        seconds = time.perf_counter() - t0
        row = {
            "stage": stage, "epoch": epoch, "train_loss": loss_sum / max(n_seen, 1),
            "selection_loss": sel_loss, "selection_r2": sel_r2, "lr": lr_used, "seconds": seconds,
        }  # fmt: skip
        state.end_epoch(row, n_seen, train_s, tc, time.perf_counter() - t_start)
        save_epoch(out_dir, base, learner, state, better)
        speed = n_seen / max(train_s, 1e-9)
        log.info("%s", epoch_line(row, state, tc, better, speed))
        emit({
            "event": "epoch", "stage": stage, "seed": tc.seed, "epoch": epoch,
            "epochs": tc.epochs, "best_epoch": state.best_epoch,
            "best_selection_loss": state.best_selection_loss,
            "patience": tc.early_stopping_patience,
            "patience_left": tc.early_stopping_patience - state.bad_epochs,
            "samples_per_s": speed, "elapsed_s": state.elapsed_s,
            "finished": state.finished, "stopped_early": state.stopped_early,
        })  # fmt: skip
        if on_epoch is not None:
            on_epoch(dict(row))
    if state.stopped_early:
        log.info(
            "%s: early stop after epoch %d, no selection-split improvement in %d epochs "
            "(best epoch %d)", stage, state.epoch, tc.early_stopping_patience, state.best_epoch,
        )  # fmt: skip
    return state
