"""Ranking the sweep's variants on the selection split, never on the validation flight.

The selection split is the time-ordered tail of each training flight that finetune already
holds out to pick its epoch (docs/architecture.md, 'Training procedure'). A variant's score
is its members' mean selection-split R² at their kept (best) epoch. R² and not the
selection loss: the loss is the variant's own loss function (Huber or MSE/MAE), so losses
of variants with different losses do not compare. The validation flight's figures reach
the comparison table in their own columns, after the ranking is fixed.

When asked (pipeline `sweep-lofo`), a variant is ranked instead on leave-one-flight-out over
its training flights (cloudml.experiments.folds.training_fold_configs): the mean R² of folds
that each hold out one training flight, none of which contains the validation flight.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cloudml.errors import DataError


def member_selection(history: list[dict[str, Any]], best_epoch: int) -> dict[str, float]:
    """The selection-split figures of one member's finetune at its kept epoch (pure)."""
    rows = [r for r in history if int(r["epoch"]) == int(best_epoch)]
    if not rows:
        raise DataError(f"finetune history has no row for its best epoch {best_epoch}")
    return {"selection_r2": float(rows[-1]["selection_r2"]),
            "selection_loss": float(rows[-1]["selection_loss"])}  # fmt: skip


def selection_score(label: str, members: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's score from its members' {selection_r2, selection_loss, seconds} (pure):
    the mean selection R² ranks; the training time is the members' sum."""
    if not members:
        raise DataError(f"{label}: no finetuned members to score")
    r2 = [m["selection_r2"] for m in members]
    return {
        "label": label,
        "selection_r2": float(sum(r2) / len(r2)),
        "selection_r2_min": float(min(r2)),
        "selection_r2_max": float(max(r2)),
        "selection_loss": float(sum(m["selection_loss"] for m in members) / len(members)),
        "train_seconds": float(sum(m["seconds"] for m in members)),
        "members": len(members),
    }


def read_member(member_dir: str | Path) -> dict[str, float]:
    """A finetuned member artifact -> its selection figures and training seconds (both
    stages), from summary.json, history.json and pretrain_summary.json."""
    d = Path(member_dir)
    try:
        summary = json.loads((d / "summary.json").read_text())
        history = json.loads((d / "history.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{d}: finetuned member without a readable summary/history: {e}") from None
    seconds = float(summary.get("seconds", 0.0))
    if (d / "pretrain_summary.json").is_file():
        seconds += float(json.loads((d / "pretrain_summary.json").read_text()).get("seconds", 0))
    return {**member_selection(history, summary["best_epoch"]), "seconds": seconds}


def lofo_score(label: str, folds: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's leave-one-training-flight-out score from its folds' {held_out, r2}
    (pure): the mean R² over the held-out training flights ranks (pipeline sweep-lofo)."""
    if not folds:
        raise DataError(f"{label}: no leave-one-flight-out folds to score")
    r2 = [float(f["r2"]) for f in folds]
    return {
        "label": label,
        "lofo_r2": float(sum(r2) / len(r2)),
        "lofo_r2_min": float(min(r2)),
        "lofo_r2_max": float(max(r2)),
        "folds": {f["held_out"]: float(f["r2"]) for f in folds},
    }


RANK_KEYS = {"selection": "selection_r2", "lofo": "lofo_r2"}  # what a sweep ranks on


def rank(scores: list[dict[str, Any]], on: str = "selection") -> list[str]:
    """Labels best first: higher mean selection R² (on="selection") or mean R² over the
    held-out training flights (on="lofo") first, NaN last, ties by label (pure)."""
    if on not in RANK_KEYS:
        raise DataError(f"ranking: on must be one of {sorted(RANK_KEYS)}, got {on!r}")
    field = RANK_KEYS[on]

    def key(s: dict[str, Any]) -> tuple[bool, float, str]:
        r2 = float(s[field])
        return (math.isnan(r2), -r2 if not math.isnan(r2) else 0.0, s["label"])

    labels = [s["label"] for s in scores]
    if len(set(labels)) != len(labels):
        raise DataError(f"ranking: a variant scored twice in {labels}")
    return [s["label"] for s in sorted(scores, key=key)]
