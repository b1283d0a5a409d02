"""What a fit carries from epoch to epoch and across a restart, and its files.

- `TrainState`: counters, best validation loss, history (last.pt stores it as a plain dict);
- `Learner`: the network, its EMA copy, optimizer, plateau schedule and the best weights;
- `save_epoch` writes model.pt (on a better epoch), last.pt and history.json after an epoch,
  `resume_from` reads last.pt back into a Learner, together with the RNG states, so a resumed
  run draws exactly what an uninterrupted one draws.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from cloudml.config import TrainConfig
from cloudml.errors import DataError
from cloudml.fileio import write_json
from cloudml.model import CBHNet
from cloudml.training.checkpoint import (
    check_resumable,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Where a fit stands; last.pt stores it as a plain dict (`asdict`) under "state"."""

    epoch: int = 0  # epochs completed
    global_step: int = 0  # optimizer steps taken
    best_selection_loss: float = float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the last improvement
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    elapsed_s: float = 0.0
    train_samples: int = 0
    train_s: float = 0.0  # seconds in training steps (throughput = train_samples / train_s)
    stopped_early: bool = False
    finished: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | Path) -> TrainState:
        """The state a checkpoint recorded; unknown keys are refused, naming the file."""
        try:
            return cls(**d)
        except TypeError as e:
            raise DataError(f"{where}: training state does not match TrainState ({e})") from None

    def end_epoch(
        self, row: dict[str, Any], n_seen: int, train_s: float, tc: TrainConfig, elapsed_s: float
    ) -> None:
        """Record epoch `row["epoch"]` and decide whether the fit is finished."""
        self.history.append(row)
        self.epoch = row["epoch"]
        self.train_samples += n_seen
        self.train_s += train_s
        self.stopped_early = self.bad_epochs >= tc.early_stopping_patience
        self.finished = self.stopped_early or self.epoch >= tc.epochs
        self.elapsed_s = elapsed_s


@dataclass
class Learner:
    """What a fit updates: the network, the module the training step runs (`net`, compiled
    when configured), the EMA copy, optimizer, plateau schedule and the best weights so far."""

    net: CBHNet
    model: torch.nn.Module
    ema: AveragedModel | None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.ReduceLROnPlateau
    device: torch.device
    best_state: dict[str, torch.Tensor]

    @property
    def kept(self) -> torch.nn.Module:
        """The weights judged, checkpointed and shipped: its state_dict is what model.pt holds."""
        return self.net if self.ema is None else self.ema.module

    @property
    def judged(self) -> torch.nn.Module:
        """What validation runs (compiled or not)."""
        return self.model if self.ema is None else self.ema.module


def rng_state() -> dict[str, Any]:
    """torch, numpy and Python RNG states as tensors, lists and numbers (weights_only loads)."""
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


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def resume_from(last: Path, learner: Learner, base: dict[str, Any], stage: str) -> TrainState:
    """The state to continue from: out_dir/last.pt's (weights, optimizer, schedule, RNG
    restored into `learner` and the process) when it exists, else a fresh one."""
    if not last.exists():
        return TrainState()
    ck = load_checkpoint(last)
    check_resumable(ck, base, last)
    load_weights(learner.net, ck["model"], last)
    if learner.ema is not None:
        learner.ema.load_state_dict(ck["ema"])
    learner.opt.load_state_dict(ck["optimizer"])
    learner.sched.load_state_dict(ck["scheduler"])
    learner.best_state = ck["best_model"]
    state = TrainState.from_dict(ck["state"], last)
    set_rng_state(ck["rng"])
    log.info(
        "%s: resuming from %s after epoch %d (step %d)",
        stage,
        last,
        state.epoch,
        state.global_step,
    )
    return state


def save_epoch(
    out_dir: Path, base: dict[str, Any], learner: Learner, state: TrainState, better: bool
) -> None:
    """model.pt (when `better`), last.pt and history.json after an epoch."""
    if better:
        save_checkpoint(out_dir / "model.pt", {
            **base, "model": learner.best_state, "epoch": state.best_epoch,
            "global_step": state.global_step, "best_selection_loss": state.best_selection_loss,
            "history": state.history,
        })  # fmt: skip
    ema = learner.ema
    save_checkpoint(out_dir / "last.pt", {
        **base, "model": learner.net.state_dict(), "best_model": learner.best_state,
        "optimizer": learner.opt.state_dict(), "scheduler": learner.sched.state_dict(),
        "state": asdict(state), "rng": rng_state(),
        **({} if ema is None else {"ema": ema.state_dict()}),
    })  # fmt: skip
    write_json(out_dir / "history.json", state.history, indent=2)
