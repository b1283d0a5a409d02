"""Prometheus metrics for batch stages, pushed to a Pushgateway (docs/storage-and-metrics.md,
sections 3 and 6).

    tel = Telemetry("tuned", "evaluate")          # url from $PUSHGATEWAY_URL
    tel.evaluation({"r2": 0.41, "mae_km": 0.2, ...})
    tel.duration(93.5)

The contract is fixed: every name is a gauge (METRIC_NAMES is the one list in code); the
grouping key is {job="cloudml", pipeline=<preset>, stage=<stage>} and never a run id or pod
name; an experiment's stages (a config labelled `sweep.<variant>` / `lofo.<held-out flight>`,
cloudml.experiments) add `variant=<variant or flight>`, bounded by the variants list (at most
cloudml.experiments.variants.MAX_VARIANTS) and the campaign's flights, under pipeline=sweep/lofo; every push is a `pushadd` (POST) of its own CollectorRegistry, so it replaces only the
names it carries and `cloudml_last_success_timestamp_seconds`, pushed only by a passing gate,
survives a later failed run. No client-side timestamps.

Metrics are best effort: no PUSHGATEWAY_URL -> one info line, nothing pushed; unreachable
gateway -> one warning per process and URL, the run goes on (short timeout per push).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

from cloudml.errors import ConfigError

log = logging.getLogger(__name__)

JOB = "cloudml"
DEFAULT_TIMEOUT_S = 2.0

# name -> HELP text. All gauges.
_HELP: dict[str, str] = {
    "cloudml_epoch": "Last finished training epoch (1-based).",
    "cloudml_train_loss": "Mean training loss of the last epoch.",
    "cloudml_epoch_selection_loss": "Validation loss of the last epoch (training-time split).",
    "cloudml_learning_rate": "Learning rate reached in the last epoch.",
    "cloudml_val_r2": "R^2 on the validation flight.",
    "cloudml_val_mae_km": "Mean absolute error on the validation flight, km.",
    "cloudml_val_rmse_km": "Root mean squared error on the validation flight, km.",
    "cloudml_val_loss": "Training loss function evaluated on the validation flight.",
    "cloudml_val_std_ratio": "std(prediction) / std(target) on the validation flight.",
    "cloudml_val_samples": "Number of validation samples scored.",
    "cloudml_val_r2_lower": "Lower end of the 95% block-bootstrap interval of the validation R^2.",
    "cloudml_val_r2_upper": "Upper end of the 95% block-bootstrap interval of the validation R^2.",
    "cloudml_val_mae_km_lower": "Lower end of the 95% block-bootstrap interval of the validation "
    "MAE, km.",
    "cloudml_val_mae_km_upper": "Upper end of the 95% block-bootstrap interval of the validation "
    "MAE, km.",
    "cloudml_baseline_r2": "R^2 of the ridge baseline on the validation flight.",
    "cloudml_val_member_r2_min": "Lowest validation R^2 among the ensemble's members.",
    "cloudml_val_member_r2_max": "Highest validation R^2 among the ensemble's members.",
    "cloudml_ensemble_size": "Number of members in the evaluated ensemble.",
    "cloudml_stage_duration_seconds": "Wall-clock seconds of the stage's last run.",
    "cloudml_gate_passed": "1 if the last gate passed, 0 if it failed.",
    "cloudml_gate_threshold": "R^2 threshold the last gate applied.",
    "cloudml_last_success_timestamp_seconds": "Unix time of the last run whose gate passed.",
    "cloudml_champion_r2": "R^2 of the champion model after the last promotion decision.",
    "cloudml_promoted": "1 if the last promotion decision promoted the challenger, else 0.",
}
METRIC_NAMES: frozenset[str] = frozenset(_HELP)

_TRAIN = frozenset(
    {"cloudml_epoch", "cloudml_train_loss", "cloudml_epoch_selection_loss", "cloudml_learning_rate"}
)
# Which names each stage may push (plus cloudml_stage_duration_seconds everywhere).
STAGE_METRICS: dict[str, frozenset[str]] = {
    "ingest": frozenset(),
    "pretrain": _TRAIN,
    "finetune": _TRAIN,
    "evaluate": frozenset(
        {
            "cloudml_val_r2",
            "cloudml_val_mae_km",
            "cloudml_val_rmse_km",
            "cloudml_val_loss",
            "cloudml_val_std_ratio",
            "cloudml_val_samples",
            "cloudml_val_r2_lower",
            "cloudml_val_r2_upper",
            "cloudml_val_mae_km_lower",
            "cloudml_val_mae_km_upper",
            "cloudml_baseline_r2",
            "cloudml_val_member_r2_min",
            "cloudml_val_member_r2_max",
            "cloudml_ensemble_size",
        }
    ),
    "gate": frozenset(
        {"cloudml_gate_passed", "cloudml_gate_threshold", "cloudml_last_success_timestamp_seconds"}
    ),
    "promote": frozenset({"cloudml_champion_r2", "cloudml_promoted"}),
}
STAGES = tuple(STAGE_METRICS)

# evaluate's metrics dict (metrics.json: the ensemble's figures, their 95% interval bounds,
# the members' spread and the baseline) -> metric name
EVAL_KEYS: dict[str, str] = {
    "r2": "cloudml_val_r2",
    "mae_km": "cloudml_val_mae_km",
    "rmse_km": "cloudml_val_rmse_km",
    "loss": "cloudml_val_loss",
    "std_ratio": "cloudml_val_std_ratio",
    "n": "cloudml_val_samples",
    "r2_lo": "cloudml_val_r2_lower",
    "r2_hi": "cloudml_val_r2_upper",
    "mae_km_lo": "cloudml_val_mae_km_lower",
    "mae_km_hi": "cloudml_val_mae_km_upper",
    "baseline_r2": "cloudml_baseline_r2",
    "member_r2_min": "cloudml_val_member_r2_min",
    "member_r2_max": "cloudml_val_member_r2_max",
    "ensemble_size": "cloudml_ensemble_size",
}

# Process-wide, so a stage that builds several Telemetry objects still logs once.
_said_unset = False
_warned_urls: set[str] = set()


def grouping_key(pipeline: str, stage: str) -> dict[str, str]:
    """{pipeline, stage} and, for an experiment's config label, its bounded variant (pure):
    "tuned" -> {pipeline: tuned, stage}; "lofo.12Feb25" -> {pipeline: lofo, variant: 12Feb25,
    stage}."""
    from cloudml.experiments import split_label

    name, variant = split_label(pipeline)
    return {"pipeline": name, "stage": stage, **({"variant": variant} if variant else {})}


def allowed_metrics(stage: str) -> frozenset[str]:
    return STAGE_METRICS[stage] | {"cloudml_stage_duration_seconds"}


def build_registry(values: Mapping[str, float]) -> CollectorRegistry:
    """One fresh registry with one unlabelled gauge per name (labels come from the group)."""
    registry = CollectorRegistry()
    for name, value in values.items():
        if name not in METRIC_NAMES:
            raise ValueError(f"{name} is not in cloudml.cluster.telemetry.METRIC_NAMES")
        Gauge(name, _HELP[name], registry=registry).set(float(value))
    return registry


def evaluation_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    """evaluate's metrics dict -> {metric name: value}; unknown keys and None are skipped, so
    a metrics dict from before ensembles and intervals pushes only the figures it has. The
    baseline's R² is read from the nested `baseline` dict when the flat copy is missing."""
    out = {}
    for key, name in EVAL_KEYS.items():
        v = metrics.get(key)
        if v is None and key == "baseline_r2":
            v = (metrics.get("baseline") or {}).get("r2")
        if v is not None:
            out[name] = float(v)
    return out


def promotion_values(decision: Mapping[str, Any]) -> dict[str, float]:
    """promote()'s decision dict -> cloudml_promoted and the champion's R² after it."""
    promoted = bool(decision["promoted"])
    champion = decision.get("champion_r2_after")
    if champion is None:
        champion = decision["challenger_r2"] if promoted else decision.get("champion_r2_before")
    out = {"cloudml_promoted": 1.0 if promoted else 0.0}
    if champion is not None:
        out["cloudml_champion_r2"] = float(champion)
    return out


class Telemetry:
    """Pushes one stage's metrics under {job, pipeline, stage}; never raises on network errors."""

    def __init__(
        self,
        pipeline: str,
        stage: str,
        url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        global _said_unset
        if stage not in STAGE_METRICS:
            raise ConfigError(f"telemetry stage {stage!r}: expected one of {', '.join(STAGES)}")
        if not pipeline:
            raise ConfigError("telemetry pipeline name is empty: expected the preset name")
        from cloudml.experiments import split_label

        self.pipeline, self.variant = split_label(pipeline)
        self.stage = stage
        self.url = url if url is not None else os.environ.get("PUSHGATEWAY_URL") or None
        self.timeout_s = timeout_s
        self.grouping_key = grouping_key(pipeline, stage)
        if self.url is None and not _said_unset:
            log.info("PUSHGATEWAY_URL is not set: metrics are not pushed")
            _said_unset = True

    def push(self, values: Mapping[str, float]) -> bool:
        """pushadd `values` as gauges; True if the gateway accepted them."""
        bad = set(values) - allowed_metrics(self.stage)
        if bad:
            raise ValueError(f"stage {self.stage!r} may not push {sorted(bad)} (metric contract)")
        if self.url is None or not values:
            return False
        registry = build_registry(values)
        try:
            pushadd_to_gateway(
                self.url,
                job=JOB,
                registry=registry,
                grouping_key=self.grouping_key,
                timeout=self.timeout_s,
            )
        except (OSError, ValueError) as e:
            if self.url not in _warned_urls:
                _warned_urls.add(self.url)
                log.warning(
                    "Pushgateway %s unreachable (%s: %s); metrics are dropped, the run goes on "
                    "(warned once)",
                    self.url,
                    type(e).__name__,
                    e,
                )
            else:
                log.debug("Pushgateway %s push failed again: %s", self.url, e)
            return False
        return True

    def epoch(
        self,
        epoch: int | Mapping[str, Any],
        train_loss: float | None = None,
        selection_loss: float | None = None,
        lr: float | None = None,
    ) -> bool:
        """One training epoch; also accepts train.py's history row {epoch, train_loss, ...}."""
        if isinstance(epoch, Mapping):
            row = epoch
            epoch, train_loss = row["epoch"], row.get("train_loss")
            selection_loss, lr = row.get("selection_loss"), row.get("lr")
        values = {"cloudml_epoch": float(epoch)}
        for name, v in (
            ("cloudml_train_loss", train_loss),
            ("cloudml_epoch_selection_loss", selection_loss),
            ("cloudml_learning_rate", lr),
        ):
            if v is not None:
                values[name] = float(v)
        return self.push(values)

    def evaluation(self, metrics: Mapping[str, Any]) -> bool:
        return self.push(evaluation_values(metrics))

    def duration(self, seconds: float) -> bool:
        return self.push({"cloudml_stage_duration_seconds": float(seconds)})

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Push the block's wall-clock duration when it ends (also when it raises)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.duration(time.perf_counter() - t0)

    def gate(self, passed: bool, threshold: float, now: float | None = None) -> bool:
        """Gate result; only a pass pushes cloudml_last_success_timestamp_seconds."""
        values = {
            "cloudml_gate_passed": 1.0 if passed else 0.0,
            "cloudml_gate_threshold": float(threshold),
        }
        if passed:
            values["cloudml_last_success_timestamp_seconds"] = time.time() if now is None else now
        return self.push(values)

    def promotion(self, decision: Mapping[str, Any]) -> bool:
        return self.push(promotion_values(decision))
