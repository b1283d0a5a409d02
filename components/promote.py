"""promote: after a passed gate, store the model and make it the champion if R² beats it."""

from kfp import dsl
from kfp.dsl import Input, Model

from cloudml.cluster.settings import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def promote(model: Input[Model], pipeline: str, run_id: str, r2: float) -> bool:
    """Returns whether this run's model became the champion."""
    from cloudml.steps import run_promote

    return bool(run_promote(model.path, pipeline, run_id, r2)["promoted"])
