"""gate: fails the run (non-zero exit, GateFailed) unless R² > threshold. Never retried."""

from kfp import dsl

from cloudml.cluster.settings import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def gate(
    r2: float, std_ratio: float, threshold: float, min_std_ratio: float, flight: str, pipeline: str
):
    from cloudml.steps import run_gate

    print(run_gate(r2, std_ratio, threshold, min_std_ratio, flight, pipeline))
