"""member-seeds: the training seeds of the ensemble's members (seed, seed+1, ...)."""

from kfp import dsl

from cloudml.cluster.settings import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def member_seeds(seed: int, ensemble_size: int) -> list[int]:
    from cloudml.steps import member_seeds as seeds

    return seeds(seed, ensemble_size)
