"""The quality gate: a run passes only if R² on the validation flight beats a threshold.

`gate_verdict` is the one rule: pure (numbers in, verdict out), so the report, the local
runner, `cloudml gate` and the KFP gate task all reach the same decision.
`GateVerdict.enforce()` is the one way to act on it: it raises GateFailed for a failed
verdict, which makes the gate task exit non-zero and the run show as failed in the Kubeflow
UI and in Prometheus (`enforce_gate` = gate_verdict(...).enforce()).

Three checks (docs/architecture.md, 'Data flow' and 'Training procedure'):
- R² > threshold (default 0.3), strictly: R² == threshold fails. R² is the shipped
  ensemble's (cloudml.ensemble).
- prediction/target std ratio >= min_std_ratio (default 0.1): a collapsed model that
  predicts near-constant values can still post a small positive R² on a low-variance
  flight; the ratio catches it. 0 disables the check.
- R² > the ridge baseline's R² + skill_margin (cloudml.baseline; on by default in the
  pipeline, the CLI and local runs, skill_margin 0): a CNN that does not beat ten numbers
  per frame has not learned the geometry.
A pass is "PASSED within noise" when the lower end of R²'s 95% block-bootstrap interval
(cloudml.uncertainty) does not clear the threshold: the verdict could flip on another draw.
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
DEFAULT_BEAT_BASELINE = True  # the shipped model must beat the ridge baseline (cloudml.baseline)
DEFAULT_SKILL_MARGIN = 0.0  # ... by more than this much R²


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
    r2_lo: float = math.nan  # lower end of R²'s 95% interval (NaN: not given)
    r2_hi: float = math.nan
    baseline_r2: float | None = None  # the ridge baseline's R² on the same flight
    beat_baseline: bool = False  # whether the baseline criterion was applied
    skill_margin: float = 0.0  # R² must exceed the baseline's by more than this

    @property
    def within_noise(self) -> bool:
        """Passed, but the interval's lower end does not clear the threshold (or is unknown)."""
        return self.passed and not self.r2_lo > self.threshold

    @property
    def message(self) -> str:
        word = (
            "FAILED"
            if not self.passed
            else "PASSED within noise"
            if self.within_noise
            else "PASSED"
        )
        iv = "" if math.isnan(self.r2_lo) else f" [95% {self.r2_lo:.4f}, {self.r2_hi:.4f}]"
        base = (
            "" if self.baseline_r2 is None
            else f"baseline R² = {self.baseline_r2:.4f}"
            + (f" (must beat it by {self.skill_margin:.4f})" if self.beat_baseline else " (not gated)")
            + ", "
        )  # fmt: skip
        head = (
            f"gate {word} on validation flight {self.flight}: R² = {self.r2:.4f}{iv} "
            f"(threshold {self.threshold:.4f}), {base}"
            f"std ratio = {self.std_ratio:.4f} (min {self.min_std_ratio:.4f})"
        )
        if not self.passed:
            return head + ": " + "; ".join(self.reasons)
        if self.within_noise and not math.isnan(self.r2_lo):
            return (
                head + f": the interval's lower end {self.r2_lo:.4f} does not clear the threshold"
            )
        return head

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in (
            "passed", "r2", "std_ratio", "threshold", "min_std_ratio", "flight", "r2_lo", "r2_hi",
            "baseline_r2", "beat_baseline", "skill_margin", "within_noise", "message")}  # fmt: skip
        return {**d, "reasons": list(self.reasons)}

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
    *,
    r2_interval: tuple[float, float] = (math.nan, math.nan),
    baseline_r2: float | None = None,
    beat_baseline: bool = False,
    skill_margin: float = DEFAULT_SKILL_MARGIN,
) -> GateVerdict:
    """Decide pass/fail; NaN R² or NaN std ratio always fails (nothing was learned).
    With beat_baseline, R² must also exceed baseline_r2 + skill_margin (a missing baseline
    fails); the interval only qualifies a pass ("within noise"), it never fails one."""
    if any(math.isnan(x) for x in (threshold, min_std_ratio, skill_margin)):
        raise ConfigError(
            f"gate: threshold ({threshold}), min_std_ratio ({min_std_ratio}) and skill_margin "
            f"({skill_margin}) must be numbers"
        )
    reasons: list[str] = []
    if not r2 > threshold:  # also catches NaN
        reasons.append(f"R² {r2:.4f} is not above the threshold {threshold:.4f}")
    if not std_ratio >= min_std_ratio:
        reasons.append(
            f"collapsed model: prediction/target std ratio {std_ratio:.4f} is below "
            f"min_std_ratio {min_std_ratio:.4f} (predictions are near-constant)"
        )
    if beat_baseline and baseline_r2 is None:
        reasons.append("no baseline R² to compare with (evaluate fits it on the training flights)")
    elif beat_baseline and not r2 > baseline_r2 + skill_margin:
        reasons.append(
            f"R² {r2:.4f} does not beat the ridge baseline's {baseline_r2:.4f} by more than "
            f"skill_margin {skill_margin:.4f}"
        )
    return GateVerdict(
        passed=not reasons, r2=float(r2), std_ratio=float(std_ratio), threshold=float(threshold),
        min_std_ratio=float(min_std_ratio), flight=flight, reasons=reasons,
        r2_lo=float(r2_interval[0]), r2_hi=float(r2_interval[1]),
        baseline_r2=None if baseline_r2 is None else float(baseline_r2),
        beat_baseline=bool(beat_baseline), skill_margin=float(skill_margin),
    )  # fmt: skip


def enforce_gate(r2: float, std_ratio: float, *args: Any, **kwargs: Any) -> GateVerdict:
    """Return the verdict when it passes; raise GateFailed (R², threshold, flight) otherwise.
    Takes gate_verdict's arguments."""
    return gate_verdict(r2, std_ratio, *args, **kwargs).enforce()


def verdict_from_metrics(
    metrics: dict[str, Any],
    threshold: float = DEFAULT_THRESHOLD,
    min_std_ratio: float = DEFAULT_MIN_STD_RATIO,
    flight: str = "?",
    *,
    beat_baseline: bool = DEFAULT_BEAT_BASELINE,
    skill_margin: float = DEFAULT_SKILL_MARGIN,
) -> GateVerdict:
    """The verdict on evaluate's metrics ({r2, std_ratio, flight, r2_lo, r2_hi, baseline_r2,
    ...}); `flight` names the validation flight when the metrics do not."""
    base = metrics.get("baseline_r2")
    return gate_verdict(
        float(metrics["r2"]),
        float(metrics["std_ratio"]),
        threshold,
        min_std_ratio,
        str(metrics.get("flight", flight)),
        r2_interval=(float(metrics.get("r2_lo", math.nan)), float(metrics.get("r2_hi", math.nan))),
        baseline_r2=None if base is None else float(base),
        beat_baseline=beat_baseline,
        skill_margin=skill_margin,
    )


def gate_from_metrics_file(
    metrics_path: Path,
    threshold: float = DEFAULT_THRESHOLD,
    min_std_ratio: float = DEFAULT_MIN_STD_RATIO,
    beat_baseline: bool = DEFAULT_BEAT_BASELINE,
    skill_margin: float = DEFAULT_SKILL_MARGIN,
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
    return verdict_from_metrics(
        metrics, threshold, min_std_ratio, beat_baseline=beat_baseline, skill_margin=skill_margin
    ).enforce()


def add_command(sub: argparse._SubParsersAction) -> None:
    """`cloudml gate --metrics FILE`: print the verdict; exit 1 (GateFailed) when it fails."""
    p = sub.add_parser("gate", help="fail (exit 1) unless R² in a metrics.json beats the threshold")
    p.add_argument("--metrics", type=Path, required=True, metavar="FILE",
                   help="evaluate's metrics.json")  # fmt: skip
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"R² must exceed it (default {DEFAULT_THRESHOLD})")  # fmt: skip
    p.add_argument("--min-std-ratio", type=float, default=DEFAULT_MIN_STD_RATIO,
                   help="collapse check: std(prediction)/std(target) must reach it "
                        f"(default {DEFAULT_MIN_STD_RATIO}; 0 disables)")  # fmt: skip
    p.add_argument("--skill-margin", type=float, default=DEFAULT_SKILL_MARGIN,
                   help="R² must beat the ridge baseline's by more than this")  # fmt: skip
    p.add_argument("--no-baseline", dest="beat_baseline", action="store_false",
                   help="do not require beating the ridge baseline")  # fmt: skip

    def run(args: argparse.Namespace) -> int:
        v = gate_from_metrics_file(
            args.metrics, args.threshold, args.min_std_ratio, args.beat_baseline, args.skill_margin
        )
        print(v.message)
        return 0

    p.set_defaults(func=run)
