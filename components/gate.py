"""gate: fails the run (non-zero exit, GateFailed) unless the ensemble's R² > threshold, its
std ratio >= min_std_ratio and (beat_baseline) R² > the ridge baseline's + skill_margin. The
message says "PASSED within noise" when R²'s interval does not clear the threshold. Never
retried."""

from kfp import dsl

from cloudml.cluster.settings import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def gate(
    r2: float,
    r2_lo: float,
    r2_hi: float,
    std_ratio: float,
    baseline_r2: float,
    threshold: float,
    min_std_ratio: float,
    beat_baseline: bool,
    skill_margin: float,
    flight: str,
    pipeline: str,
):
    """Pass or fail the run on the ensemble's R² (a failed gate is a failed run, never
    retried, and nothing is promoted).

    Args:
        r2: The ensemble's R² on the validation flight.
        r2_lo: Lower end of R²'s 95% interval ("PASSED within noise" when below threshold).
        r2_hi: Upper end of R²'s 95% interval.
        std_ratio: std(prediction) / std(truth); a collapsed model has a ratio near 0.
        baseline_r2: The ridge baseline's R².
        threshold: R² must be above it.
        min_std_ratio: std_ratio must be at least this (0 disables).
        beat_baseline: Also require R² above baseline_r2 + skill_margin.
        skill_margin: The margin over the baseline.
        flight: The validation flight (named in the verdict).
        pipeline: The preset (named in the verdict).
    """
    from cloudml.steps import run_gate

    print(run_gate(r2, std_ratio, threshold, min_std_ratio, flight, pipeline,
                   r2_interval=(r2_lo, r2_hi), baseline_r2=baseline_r2,
                   beat_baseline=beat_baseline, skill_margin=skill_margin))  # fmt: skip
