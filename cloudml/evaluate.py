"""Evaluate a checkpoint on the validation flight only (docs/architecture.md, 'Data flow'):
metrics.json, predictions.csv and PNG plots (pred vs true, residuals, learning curves of both
stages).

    metrics = evaluate(Path("12Feb25.h5"), Path("finetune/model.pt"), cfg, Path("eval"),
                       {"pretrain": Path("pretrain/history.json"), "finetune": ...})
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cloudml.config import Config
from cloudml.config_cli import add_config_args, config_from_args
from cloudml.errors import ConfigError, DataError
from cloudml.fileio import atomic_path, write_json
from cloudml.metrics import regression_metrics

log = logging.getLogger(__name__)


def _plots(
    out_dir: Path, y: np.ndarray, p: np.ndarray, histories: dict[str, list[dict]], m: dict
) -> None:
    """pred_vs_true.png, residuals.png and learning_curves.png (one panel per stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig: Any, name: str) -> None:
        with atomic_path(out_dir / name) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, p, s=10, alpha=0.7)
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="1:1")
    ax.set(xlabel="CPL cloud base (km)", ylabel="predicted (km)",
           title=f"{m['flight']}: R²={m['r2']:.3f} MAE={m['mae_km']:.3f} km")  # fmt: skip
    ax.legend()
    save(fig, "pred_vs_true.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(p - y, bins=30)
    ax.axvline(0, color="k", lw=1)
    ax.set(xlabel="prediction - truth (km)", ylabel="samples", title="residuals")
    save(fig, "residuals.png")

    fig, axes = plt.subplots(
        1, max(1, len(histories)), figsize=(5 * max(1, len(histories)), 4), squeeze=False
    )
    for ax, (stage, rows) in zip(axes[0], histories.items(), strict=False):
        ep = [r["epoch"] for r in rows]
        ax.plot(ep, [r["train_loss"] for r in rows], label="train")
        ax.plot(ep, [r["val_loss"] for r in rows], label="val")
        ax.set(xlabel="epoch", ylabel="loss", title=stage)
        ax.legend()
    save(fig, "learning_curves.png")


def evaluate(
    shard: Path,
    checkpoint: Path,
    cfg: Config,
    out_dir: Path,
    histories: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Metrics of `checkpoint` on the validation flight's shard; writes metrics, CSV, plots."""
    import torch

    from cloudml.training.checkpoint import load_checkpoint, model_from_checkpoint
    from cloudml.training.data import load_pool, shard_flight
    from cloudml.training.loop import device_for, loss_fn, predict

    out_dir, flight = Path(out_dir), cfg.data.validation_flight
    got = shard_flight(Path(shard))
    if got != flight:
        raise DataError(
            f"{shard}: holds flight {got}, evaluate runs on validation_flight {flight} only"
        )
    ck = load_checkpoint(Path(checkpoint))
    net = model_from_checkpoint(ck, checkpoint)
    t = int(ck["temporal_frames"])
    if t != cfg.data.temporal_frames:
        raise ConfigError(
            f"{checkpoint}: model takes {t} frames, config temporal_frames is {cfg.data.temporal_frames}"
        )
    pool = load_pool({flight: Path(shard)}, [flight], t)
    sc = ck["scalers"]
    device = device_for()
    idx = np.arange(len(pool))
    z = predict(net.to(device), pool, idx, sc, device)
    y = pool.cbh_km
    p = z * sc["cbh_std"] + sc["cbh_mean"]
    loss = float(
        loss_fn(
            torch.as_tensor(z), torch.as_tensor((y - sc["cbh_mean"]) / sc["cbh_std"]), cfg.train
        )
    )
    m = {"flight": flight, "loss": loss, **regression_metrics(y, p)}
    hist = {k: json.loads(Path(v).read_text()) for k, v in (histories or {}).items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "predictions.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_utc", "cbh_true_km", "cbh_pred_km"])
        for row in zip(pool.time_utc, y, p, strict=True):
            w.writerow([f"{row[0]:.3f}", f"{row[1]:.5f}", f"{row[2]:.5f}"])
    _plots(out_dir, y, p, hist, m)
    write_json(out_dir / "metrics.json", m, indent=2)
    log.info(
        "evaluate %s: R2 %.3f MAE %.3f km RMSE %.3f km std ratio %.2f n %d",
        flight, m["r2"], m["mae_km"], m["rmse_km"], m["std_ratio"], m["n"],
    )  # fmt: skip
    return m


def _parse_history(items: list[str]) -> dict[str, Path]:
    """{stage: history.json path} from --history NAME=PATH items."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"--history {item!r}: expected NAME=PATH")
        out[name] = Path(path)
    return out


def _cmd(args: argparse.Namespace) -> int:
    """Evaluate args.checkpoint on the shard args.shard; print the metrics."""
    cfg = config_from_args(args)
    m = evaluate(
        Path(args.shard), Path(args.checkpoint), cfg, Path(args.out), _parse_history(args.history)
    )
    print(json.dumps(m, indent=2))
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    """The `evaluate` subcommand."""
    p = sub.add_parser("evaluate", help="metrics of a checkpoint on the validation flight")
    p.add_argument("--shard", action="append", required=True, metavar="FILE",
                   help="shard(s); only the validation flight's is used")  # fmt: skip
    p.add_argument("--checkpoint", required=True, metavar="FILE")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument(
        "--history", action="append", default=[], metavar="NAME=PATH", help="history.json per stage"
    )
    add_config_args(p)
    p.set_defaults(func=_eval_cmd)


def _eval_cmd(args: argparse.Namespace) -> int:
    """Pick the validation flight's shard from the --shard list, then evaluate."""
    from cloudml.training.data import shards_from_paths

    cfg = config_from_args(args)
    shards = shards_from_paths(args.shard)
    if cfg.data.validation_flight not in shards:
        raise DataError(
            f"no shard for validation_flight {cfg.data.validation_flight} among {sorted(shards)}"
        )
    args.shard = str(shards[cfg.data.validation_flight])
    return _cmd(args)
