"""gate and promote tasks: the verdict, then the store and the champion pointer."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from cloudml.errors import StorageError
from cloudml.gate import DEFAULT_SKILL_MARGIN, gate_verdict
from cloudml.steps.common import _telemetry

log = logging.getLogger(__name__)


def run_gate(
    r2: float,
    std_ratio: float,
    threshold: float,
    min_std_ratio: float,
    flight: str,
    pipeline: str,
    *,
    r2_interval: tuple[float, float] = (math.nan, math.nan),
    baseline_r2: float | None = None,
    beat_baseline: bool = False,
    skill_margin: float = DEFAULT_SKILL_MARGIN,
) -> str:
    """Push the verdict (a pass also stamps cloudml_last_success_timestamp_seconds), then
    raise GateFailed unless it passed; returns the verdict line."""
    verdict = gate_verdict(
        r2, std_ratio, threshold, min_std_ratio, flight, r2_interval=r2_interval,
        baseline_r2=baseline_r2, beat_baseline=beat_baseline, skill_margin=skill_margin,
    )  # fmt: skip
    _telemetry(pipeline, "gate").gate(verdict.passed, threshold)
    return verdict.enforce().message


def run_promote(model_dir: Path, pipeline: str, run_id: str, r2: float) -> dict[str, Any]:
    """Upload the gated model to runs/<pipeline>/<run id>/model in the store (CLOUDML_STORE),
    then make it the champion if its R² beats the current one (cloudml.store.promotion)."""
    from cloudml.store.backends import open_store
    from cloudml.store.layout import run_prefix
    from cloudml.store.manifest import upload_dir
    from cloudml.store.promotion import promote

    if not run_id:
        raise StorageError("promote: empty run id (expected the KFP pipeline job id)")
    store = open_store()
    prefix = f"{run_prefix(pipeline, run_id)}/model"
    upload_dir(store, Path(model_dir), prefix)
    decision = promote(store, pipeline, run_id, prefix, float(r2))
    _telemetry(pipeline, "promote").promotion(decision)
    log.info("promote: %s", decision.get("reason"))
    return decision
