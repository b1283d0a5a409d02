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
    from cloudml.steps import run_gate

    print(run_gate(r2, std_ratio, threshold, min_std_ratio, flight, pipeline,
                   r2_interval=(r2_lo, r2_hi), baseline_r2=baseline_r2,
                   beat_baseline=beat_baseline, skill_margin=skill_margin))  # fmt: skip
