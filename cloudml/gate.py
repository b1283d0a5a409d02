"""The quality gate: a run passes only if R² on the validation flight beats a threshold.

`gate_verdict` is the one rule: pure (numbers in, verdict out), so the report, the local
runner, `cloudml gate` and the KFP gate task all reach the same decision.
`GateVerdict.enforce()` is the one way to act on it: it raises GateFailed for a failed
verdict, which makes the gate task exit non-zero and the run show as failed in the Kubeflow
UI and in Prometheus (`enforce_gate` = gate_verdict(...).enforce()).

Two checks (docs/architecture.md, 'Data flow' and 'Training procedure'):
- R² > threshold (default 0.3), strictly: R² == threshold fails.
- prediction/target std ratio >= min_std_ratio (default 0.1): a collapsed model that
  predicts near-constant values can still post a small positive R² on a low-variance
  flight; the ratio catches it. 0 disables the check.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudml.errors import CloudMLError, ConfigError, GateFailed

DEFAULT_THRESHOLD = 0.3
DEFAULT_MIN_STD_RATIO = 0.1


@dataclass(frozen=True)
class GateVerdict:
    """The gate's decision on one model, with the numbers it was reached on."""

    passed: bool
    r2: float
    std_ratio: float
    threshold: float
    min_std_ratio: float
    flight: str
    reasons: list[str] = field(default_factory=list)  # why it failed; empty when passed

    @property
    def message(self) -> str:
        head = (
            f"gate {'PASSED' if self.passed else 'FAILED'} on validation flight {self.flight}: "
            f"R² = {self.r2:.4f} (threshold {self.threshold:.4f}), "
            f"std ratio = {self.std_ratio:.4f} (min {self.min_std_ratio:.4f})"
        )
        return head if self.passed else head + ": " + "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "r2": self.r2,
            "std_ratio": self.std_ratio,
            "threshold": self.threshold,
            "min_std_ratio": self.min_std_ratio,
            "flight": self.flight,
            "reasons": list(self.reasons),
            "message": self.message,
        }

    def enforce(self) -> GateVerdict:
        """This verdict when it passed; raise GateFailed (its message) when it failed."""
        if not self.passed:
            raise GateFailed(self.message)
        return self


def gate_verdict(
    r2: float,
    std_ratio: float,
    threshold: float = DEFAULT_THRESHOLD,
    min_std_ratio: float = DEFAULT_MIN_STD_RATIO,
    flight: str = "?",
) -> GateVerdict:
    """Decide pass/fail; NaN R² or NaN std ratio always fails (nothing was learned)."""
    if math.isnan(threshold) or math.isnan(min_std_ratio):
        raise ConfigError(
            f"gate: threshold ({threshold}) and min_std_ratio ({min_std_ratio}) must be numbers"
        )
    reasons: list[str] = []
    if not r2 > threshold:  # also catches NaN
        reasons.append(f"R² {r2:.4f} is not above the threshold {threshold:.4f}")
    if not std_ratio >= min_std_ratio:
        reasons.append(
            f"collapsed model: prediction/target std ratio {std_ratio:.4f} is below "
            f"min_std_ratio {min_std_ratio:.4f} (predictions are near-constant)"
        )
    return GateVerdict(
        passed=not reasons,
        r2=float(r2),
        std_ratio=float(std_ratio),
        threshold=float(threshold),
        min_std_ratio=float(min_std_ratio),
        flight=flight,
        reasons=reasons,
    )


def enforce_gate(
    r2: float,
    std_ratio: float,
    threshold: float = DEFAULT_THRESHOLD,
    min_std_ratio: float = DEFAULT_MIN_STD_RATIO,
    flight: str = "?",
) -> GateVerdict:
    """Return the verdict when it passes; raise GateFailed (R², threshold, flight) otherwise."""
    return gate_verdict(r2, std_ratio, threshold, min_std_ratio, flight).enforce()


def verdict_from_metrics(
    metrics: dict[str, Any],
    threshold: float = DEFAULT_THRESHOLD,
    min_std_ratio: float = DEFAULT_MIN_STD_RATIO,
    flight: str = "?",
) -> GateVerdict:
    """The verdict on evaluate's metrics ({r2, std_ratio, flight, ...}); `flight` names the
    validation flight when the metrics do not."""
    return gate_verdict(
        float(metrics["r2"]),
        float(metrics["std_ratio"]),
        threshold,
        min_std_ratio,
        str(metrics.get("flight", flight)),
    )


def gate_from_metrics_file(
    metrics_path: Path,
    threshold: float = DEFAULT_THRESHOLD,
    min_std_ratio: float = DEFAULT_MIN_STD_RATIO,
) -> GateVerdict:
    """Enforce the gate on an evaluate metrics.json ({r2, std_ratio, flight, ...})."""
    try:
        metrics = json.loads(Path(metrics_path).read_text())
    except FileNotFoundError:
        raise CloudMLError(f"{metrics_path}: metrics file does not exist") from None
    except json.JSONDecodeError as e:
        raise CloudMLError(f"{metrics_path}: not valid JSON ({e})") from None
    missing = [k for k in ("r2", "std_ratio") if k not in metrics]
    if missing:
        raise CloudMLError(f"{metrics_path}: missing key(s) {missing}, expected evaluate's metrics")
    return verdict_from_metrics(metrics, threshold, min_std_ratio).enforce()


def add_command(sub: argparse._SubParsersAction) -> None:
    """`cloudml gate --metrics FILE`: print the verdict; exit 1 (GateFailed) when it fails."""
    p = sub.add_parser("gate", help="fail (exit 1) unless R² in a metrics.json beats the threshold")
    p.add_argument("--metrics", type=Path, required=True, help="evaluate's metrics.json")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    p.add_argument("--min-std-ratio", type=float, default=DEFAULT_MIN_STD_RATIO)

    def run(args: argparse.Namespace) -> int:
        print(gate_from_metrics_file(args.metrics, args.threshold, args.min_std_ratio).message)
        return 0

    p.set_defaults(func=run)
