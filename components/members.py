"""member-seeds: the training seeds of the ensemble's members (seed, seed+1, ...)."""

from kfp import dsl

from cloudml.cluster.settings import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def member_seeds(seed: int, ensemble_size: int) -> list[int]:
    """List the training seeds of the ensemble's members.

    Args:
        seed: The first member's seed.
        ensemble_size: The number of members.

    Returns:
        Output: [seed, seed+1, ..., seed+ensemble_size-1], one training chain each.
    """
    from cloudml.steps import member_seeds as seeds

    return seeds(seed, ensemble_size)
