"""The experiment tasks (sweep and leave-one-flight-out): configs per variant / fold, the
selection-split score, the ranking, the winner, and the fan-in tables.

Artifact layouts: an evaluation Dataset and an ensemble Model each hold config.json (the
config it came from, whose `preset` is the item's label, e.g. sweep.pure_mae), which is how
a fan-in task pairs what it collects, whatever order the collection comes in.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from cloudml.errors import DataError, GateFailed
from cloudml.experiments import BASE_PRESET, ranking, tables
from cloudml.experiments.folds import fold_configs, training_fold_configs
from cloudml.experiments.variants import variant_configs
from cloudml.fileio import atomic_path, write_json
from cloudml.steps.common import JSON_OPTIONS, config_from_json


def run_sweep_configs(config_json: str, variants: list[dict[str, Any]]) -> list[str]:
    """The base config (resolve-config's output) and the variants -> one config JSON each."""
    return variant_configs(config_json, variants)


def run_lofo_configs(config_json: str) -> list[str]:
    """The base config -> one config JSON per held-out flight."""
    return fold_configs(config_json)


def run_training_fold_configs(config_json: str) -> list[str]:
    """A variant's config -> one config JSON per held-out TRAINING flight (sweep-lofo)."""
    return training_fold_configs(config_json)


def run_lofo_score(config_json: str, evaluation_dirs: list[str]) -> str:
    """One variant's leave-one-training-flight-out score (cloudml.experiments.ranking) as
    JSON, from its folds' evaluations (each scored on its held-out training flight)."""
    label = config_from_json(config_json).preset
    evals = _by_label(evaluation_dirs)
    folds = []
    for fold_label, d in sorted(evals.items()):
        cfg = json.loads((d / "config.json").read_text())
        if not fold_label.startswith(f"{label}.lofo."):
            raise DataError(f"{label}: collected fold {fold_label} belongs to another variant")
        folds.append({"held_out": cfg["validation_flight"], "r2": _metrics(d)["r2"]})
    return json.dumps(ranking.lofo_score(label, folds), sort_keys=True)


def run_member_config(config_json: str, seed: int) -> str:
    """An ensemble member's config: the run's with the member's training seed."""
    cfg = config_from_json(config_json)
    from cloudml.config import replace

    return replace(cfg, seed=int(seed)).to_json()


def run_selection_score(config_json: str, member_dirs: list[str]) -> str:
    """One variant's selection-split score (cloudml.experiments.ranking) as JSON."""
    label = config_from_json(config_json).preset
    members = [ranking.read_member(d) for d in member_dirs]
    return json.dumps(ranking.selection_score(label, members), sort_keys=True)


def run_rank(scores: list[str], on: str = "selection") -> str:
    """The winning label. Its only inputs are the scores it ranks on: the selection-split
    scores, or (on="lofo") the leave-one-training-flight-out scores."""
    return ranking.rank([json.loads(s) for s in scores], on)[0]


def _by_label(dirs: list[str]) -> dict[str, Path]:
    """{preset label: directory} of evaluation or model artifacts (their config.json)."""
    out: dict[str, Path] = {}
    for d in dirs:
        path = Path(d) / "config.json"
        if not path.is_file():
            raise DataError(f"{d}: artifact holds no config.json (made before experiments?)")
        label = json.loads(path.read_text())["preset"]
        if label in out:
            raise DataError(f"{label}: collected twice ({out[label]} and {d})")
        out[label] = Path(d)
    return out


def _metrics(d: Path) -> dict[str, Any]:
    return json.loads((d / "metrics.json").read_text())


def run_compare(
    scores: list[str],
    evaluation_dirs: list[str],
    csv_dir: Path,
    html_path: Path,
    lofo_scores: list[str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The comparison table (rows in rank order: on the selection scores, or on
    `lofo_scores` when given) as comparison.csv / comparison.json in csv_dir and an HTML
    page; returns (rows, the KFP Metrics scalars)."""
    parsed = {s["label"]: s for s in map(json.loads, scores)}
    lofo = None if lofo_scores is None else {s["label"]: s for s in map(json.loads, lofo_scores)}
    if lofo is not None and set(lofo) != set(parsed):
        raise DataError(f"comparison: LOFO scores of {sorted(lofo)}, selection scores of "
                        f"{sorted(parsed)}")  # fmt: skip
    order = ranking.rank(list((lofo or parsed).values()), "selection" if lofo is None else "lofo")
    evals = _by_label(evaluation_dirs)
    missing = sorted(set(order) - set(evals))
    if missing:
        raise DataError(f"comparison: no evaluation of {missing}")
    validation = {label: _metrics(evals[label]) for label in order}
    rows = tables.sweep_rows(order, parsed, validation, lofo)
    cfg = json.loads((evals[order[0]] / "config.json").read_text())
    _write_table(Path(csv_dir), "comparison", rows, tables.SWEEP_COLUMNS)
    with atomic_path(Path(html_path)) as tmp:
        tmp.write_text(tables.sweep_html(rows, cfg["validation_flight"], BASE_PRESET))
    return rows, tables.sweep_ui_metrics(rows)


def _write_table(out: Path, name: str, rows: list[dict[str, Any]], columns: tuple) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / f"{name}.csv") as tmp:
        tmp.write_text(tables.to_csv(rows, columns))
    write_json(out / f"{name}.json", rows, **JSON_OPTIONS)


GATE_KEYS = ("r2", "r2_lo", "r2_hi", "std_ratio", "baseline_r2")


def run_pick_winner(
    winner: str, evaluation_dirs: list[str], model_dirs: list[str], model_out: Path
) -> dict[str, float]:
    """Copy the winner's ensemble to model_out; returns its figures the gate compares."""
    evals, models = _by_label(evaluation_dirs), _by_label(model_dirs)
    if winner not in evals or winner not in models:
        raise DataError(f"winner {winner}: not among the collected {sorted(evals)}")
    shutil.copytree(models[winner], Path(model_out), dirs_exist_ok=True)
    m = _metrics(evals[winner])
    return {k: float(m.get(k) if m.get(k) is not None else math.nan) for k in GATE_KEYS}


def _predictions(d: Path) -> tuple[np.ndarray, np.ndarray]:
    """(truth, ensemble prediction) in km from an evaluation's predictions.csv."""
    import csv

    with (d / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    y = np.array([float(r["cbh_true_km"]) for r in rows])
    return y, np.array([float(r["cbh_pred_km"]) for r in rows])


def run_lofo_report(
    evaluation_dirs: list[str],
    csv_dir: Path,
    html_path: Path,
    gate_mean: bool = False,
    threshold: float = 0.3,
) -> tuple[list[dict[str, Any]], dict[str, float], str]:
    """Per-fold rows (campaign order), their mean and spread, the CSV/JSON and HTML; with
    gate_mean, raise GateFailed (after writing) unless the mean R² > threshold. Returns
    (rows, KFP Metrics scalars, verdict line)."""
    evals = _by_label(evaluation_dirs)
    cfgs = {label: json.loads((d / "config.json").read_text()) for label, d in evals.items()}
    flights = next(iter(cfgs.values()))["flights"]
    rows = []
    for label, d in sorted(
        evals.items(), key=lambda kv: flights.index(cfgs[kv[0]]["validation_flight"])
    ):
        c = cfgs[label]
        y, p = _predictions(d)
        rows.append(tables.lofo_row(c["validation_flight"], c["pretrain_flight"], _metrics(d),
                                    tables.bias_interval(y, p)))  # fmt: skip
    summary = tables.lofo_summary(rows)
    mean = summary["mean_r2"]
    if gate_mean:
        passed = mean > threshold
        verdict = (f"gate {'PASSED' if passed else 'FAILED'} on the mean over {len(rows)} "
                   f"folds: R² = {mean:.4f} (threshold {threshold:.4f})")  # fmt: skip
    else:
        passed, verdict = True, f"not gated (mean R² over {len(rows)} folds {mean:.4f})"
    _write_table(Path(csv_dir), "lofo", rows, tables.LOFO_COLUMNS)
    write_json(Path(csv_dir) / "lofo_summary.json", {**summary, "verdict": verdict}, **JSON_OPTIONS)
    with atomic_path(Path(html_path)) as tmp:
        tmp.write_text(tables.lofo_html(rows, summary, verdict))
    if not passed:
        raise GateFailed(verdict)
    return rows, tables.lofo_ui_metrics(rows, summary), verdict
