"""Evaluate the model on the validation flight only (docs/architecture.md, 'Data flow'):
metrics.json, predictions.csv and PNG plots (pred vs true, residuals, learning curves).

The model is an ensemble of one or more finetuned checkpoints (cloudml.ensemble): its
prediction is the members' mean in km. Every figure comes with a 95% moving-block
bootstrap interval (cloudml.uncertainty), and, given the training flights' shards, the
ridge baseline (cloudml.baseline) is fitted on them and scored the same way beside it.

    metrics = evaluate(Path("12Feb25.h5"), [Path("m0/model.pt"), Path("m1/model.pt")], cfg,
                       Path("eval"), {"finetune": Path("m0/history.json")},
                       training_shards={"30Oct24": Path("30Oct24.h5"), ...})
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
from cloudml.metrics import bias_by_height, regression_metrics

log = logging.getLogger(__name__)


def best_epoch(rows: list[dict], min_delta: float) -> int | None:
    """The epoch whose weights a stage kept: the last one whose selection-split loss beat
    the best before it by more than min_delta (the training loop's rule); pure."""
    from cloudml.training.loop import improved

    best, epoch = float("inf"), None
    for r in rows:
        if improved(r["selection_loss"], best, min_delta):
            best, epoch = r["selection_loss"], r["epoch"]
    return epoch


def _plots(
    out_dir: Path,
    y: np.ndarray,
    p: np.ndarray,
    histories: dict[str, list[dict]],
    m: dict,
    min_delta: float,
) -> None:
    """pred_vs_true.png, residuals.png and learning_curves.png (one panel per stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def save(fig: Any, name: str) -> None:
        with atomic_path(out_dir / name) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, p, s=10, alpha=0.7)
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="1:1")
    pad = 0.03 * (hi - lo or 1.0)
    ax.set_xlim(lo - pad, hi + pad)  # the same range on both axes: the 1:1 line is diagonal
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set(xlabel="true cloud base, CPL lidar (km)", ylabel="predicted cloud base (km)",
           title=f"Predicted vs true cloud base, {m['flight']}\n"
                 f"R² {m['r2']:.3f}, MAE {m['mae_km']:.3f} km")  # fmt: skip
    ax.legend()
    save(fig, "pred_vs_true.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(p - y, bins=30)
    ax.axvline(0, color="k", lw=1)
    ax.set(xlabel="prediction − truth (km)", ylabel="samples",
           title=f"Residuals on {m['flight']} (mean {m['bias_km']:+.3f} km)")  # fmt: skip
    save(fig, "residuals.png")

    fig, axes = plt.subplots(
        1, max(1, len(histories)), figsize=(5 * max(1, len(histories)), 4), squeeze=False
    )
    for ax, (stage, rows) in zip(axes[0], histories.items(), strict=False):
        ep = [r["epoch"] for r in rows]
        ax.plot(ep, [r["train_loss"] for r in rows], label="train")
        ax.plot(
            ep,
            [r["selection_loss"] for r in rows],
            label="selection split (held-out tails of the training flights)",
        )
        best = best_epoch(rows, min_delta)
        if best is not None:  # the epoch whose weights the stage kept
            ax.axvline(best, color="k", ls=":", lw=1, label=f"best epoch ({best})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel="loss (training objective)",
               title=f"Learning curve: {stage}")  # fmt: skip
        ax.legend(fontsize="small")
    save(fig, "learning_curves.png")


def with_interval(y: np.ndarray, p: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """regression_metrics plus bias and the block-bootstrap interval fields (pure)."""
    from cloudml.uncertainty import CONFIDENCE, block_bootstrap, interval_fields

    m = regression_metrics(y, p)
    m["bias_km"] = float(np.mean(p - y)) if len(y) else float("nan")
    # bias by true height: regression to the mean hides inside a small overall bias
    m["bias_by_height"] = bias_by_height(y, p)
    return {**m, **interval_fields(block_bootstrap(y, p, seed=seed)), "confidence": CONFIDENCE}


def ensemble_summary(y: np.ndarray, members_km: np.ndarray, seeds: list[int]) -> dict[str, Any]:
    """The ensemble's metrics with intervals, and every member's figures (pure).
    members_km: (K, n) predictions of the K members."""
    members = []
    for seed, p in zip(seeds, members_km, strict=True):
        m = regression_metrics(y, p)
        members.append(
            {"seed": int(seed), **{k: m[k] for k in ("r2", "mae_km", "rmse_km", "std_ratio")}}
        )
    r2s = [m["r2"] for m in members]
    return {
        **with_interval(y, members_km.mean(axis=0)),
        "ensemble_size": len(members),
        "members": members,
        "member_r2_min": float(np.min(r2s)),
        "member_r2_median": float(np.median(r2s)),
        "member_r2_max": float(np.max(r2s)),
    }


def baseline_summary(y: np.ndarray, training_shards: dict[str, Path], val_shard: Any) -> tuple:
    """(metrics dict, predictions km) of the ridge baseline fitted on the training shards."""
    from cloudml.baseline import FEATURES, fit_baseline
    from cloudml.data.shard import read_shard

    # one training shard in memory at a time (cloudml.baseline)
    model = fit_baseline(read_shard(p) for _, p in sorted(training_shards.items()))
    p = model.predict(val_shard)
    desc = f"ridge on {len(FEATURES) - 3} centre-frame statistics + sza, cos/sin saa"
    return {"model": desc, "flights": list(model.flights), **with_interval(y, p)}, p


def _check_frames(ens: Any, cfg: Config, where: Any) -> None:
    if ens.temporal_frames != cfg.data.temporal_frames:
        raise ConfigError(
            f"{where}: model takes {ens.temporal_frames} frames, config temporal_frames is "
            f"{cfg.data.temporal_frames}"
        )


def _write_predictions(path: Path, pool: Any, y: np.ndarray, cols: dict[str, np.ndarray]) -> None:
    """predictions.csv: time, truth, the ensemble, every member and the baseline (km)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_utc", "cbh_true_km", *cols])
        for i in range(len(y)):
            w.writerow(
                [f"{pool.time_utc[i]:.3f}", f"{y[i]:.5f}", *(f"{c[i]:.5f}" for c in cols.values())]
            )


def evaluate(
    shard: Path,
    checkpoint: Path | list[Path],
    cfg: Config,
    out_dir: Path,
    histories: dict[str, Path] | None = None,
    *,
    training_shards: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Metrics of the model (one checkpoint or the members of an ensemble) on the validation
    flight's shard; writes metrics.json, predictions.csv and the plots. With
    `training_shards` the ridge baseline is fitted on them (never on the validation flight)."""
    import torch

    from cloudml.data.shard import read_shard
    from cloudml.ensemble import from_checkpoints
    from cloudml.training.data import load_pool, shard_flight
    from cloudml.training.loop import loss_fn

    out_dir, flight = Path(out_dir), cfg.data.validation_flight
    got = shard_flight(Path(shard))
    if got != flight:
        raise DataError(
            f"{shard}: holds flight {got}, evaluate runs on validation_flight {flight} only"
        )
    checkpoints = [Path(c) for c in (checkpoint if isinstance(checkpoint, list) else [checkpoint])]
    ens = from_checkpoints(checkpoints)
    _check_frames(ens, cfg, checkpoints[0])
    val_shard = read_shard(Path(shard))  # once: the pool and the baseline share it
    pool = load_pool({flight: val_shard}, [flight], ens.temporal_frames)
    y = pool.cbh_km
    members_km = ens.predict_pool(pool)
    p = members_km.mean(axis=0)
    sc = ens.scalers[0]
    loss = float(loss_fn(torch.as_tensor((p - sc["cbh_mean"]) / sc["cbh_std"]),
                         torch.as_tensor((y - sc["cbh_mean"]) / sc["cbh_std"]), cfg.train))  # fmt: skip
    m = {"flight": flight, "loss": loss, **ensemble_summary(y, members_km, ens.seeds)}
    # reference: predicting the training flights' mean CBH (the target scaler's mean) always
    mean_m = regression_metrics(y, np.full_like(y, sc["cbh_mean"]))
    m["train_mean_predictor"] = {"cbh_km": float(sc["cbh_mean"]),
                                 **{k: mean_m[k] for k in ("r2", "mae_km", "rmse_km")}}  # fmt: skip
    cols = {
        "cbh_pred_km": p,
        **{f"member_{s}_km": q for s, q in zip(ens.seeds, members_km, strict=True)},
    }
    if training_shards:
        if flight in training_shards:
            raise DataError(
                f"baseline: the validation flight {flight} is among the training shards"
            )
        m["baseline"], cols["baseline_km"] = baseline_summary(y, training_shards, val_shard)
        m["baseline_r2"] = m["baseline"]["r2"]
    hist = {k: json.loads(Path(v).read_text()) for k, v in (histories or {}).items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_predictions(out_dir / "predictions.csv", pool, y, cols)
    _plots(out_dir, y, p, hist, m, cfg.train.early_stopping_min_delta)
    write_json(out_dir / "metrics.json", m, indent=2)
    log.info(
        "evaluate %s: R2 %.3f [%.3f, %.3f] MAE %.3f km, %d member(s) R2 %.3f..%.3f, baseline R2 %s",
        flight, m["r2"], m["r2_lo"], m["r2_hi"], m["mae_km"], m["ensemble_size"],
        m["member_r2_min"], m["member_r2_max"],
        f"{m['baseline_r2']:.3f}" if "baseline_r2" in m else "not fitted",
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


def add_command(sub: argparse._SubParsersAction) -> None:
    """The `evaluate` subcommand."""
    p = sub.add_parser("evaluate", help="metrics of a checkpoint on the validation flight")
    p.add_argument("--shard", action="append", required=True, metavar="FILE",
                   help="shard(s): the validation flight's is scored, the training flights' "
                        "fit the ridge baseline")  # fmt: skip
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="FILE",
        help="a member's model.pt (repeat for an ensemble)",
    )
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory: metrics.json, predictions.csv, plots")  # fmt: skip
    p.add_argument(
        "--history", action="append", default=[], metavar="NAME=PATH", help="history.json per stage"
    )
    add_config_args(p)
    p.set_defaults(func=_eval_cmd)


def _eval_cmd(args: argparse.Namespace) -> int:
    """Score the validation flight's shard of the --shard list; the training flights' shards
    among them fit the baseline."""
    from cloudml.config import parse_overrides
    from cloudml.fileio import check_output_dir
    from cloudml.training.checkpoint import check_architecture_overrides
    from cloudml.training.data import shards_from_paths

    cfg = config_from_args(args)
    check_output_dir(args.out)
    check_architecture_overrides(cfg, parse_overrides(args.overrides), args.checkpoint)
    shards = shards_from_paths(args.shard)
    val = cfg.data.validation_flight
    if val not in shards:
        raise DataError(f"no shard for validation_flight {val} among {sorted(shards)}")
    train = {f: shards[f] for f in cfg.data.training_flights if f in shards}
    m = evaluate(shards[val], [Path(c) for c in args.checkpoint], cfg, Path(args.out),
                 _parse_history(args.history), training_shards=train or None)  # fmt: skip
    print(json.dumps(m, indent=2))
    return 0
