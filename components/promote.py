"""promote: after a passed gate, store the model and make it the champion if R² beats it."""

from kfp import dsl
from kfp.dsl import Input, Model

from cloudml.cluster.settings import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def promote(model: Input[Model], pipeline: str, run_id: str, r2: float) -> bool:
    """After a passed gate: store the run's model and make it the champion if its R² beats
    the current champion's (never cached: the answer depends on the store's champion).

    Args:
        model: The shipped ensemble from evaluate.
        pipeline: The preset (one champion per pipeline).
        run_id: The KFP run id (the model's version name in the store).
        r2: The ensemble's R² on the validation flight.

    Returns:
        Output: Whether this run's model became the champion.
    """
    from cloudml.steps import run_promote

    return bool(run_promote(model.path, pipeline, run_id, r2)["promoted"])
