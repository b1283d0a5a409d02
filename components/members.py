"""member-seeds and member-config: the ensemble's members' seeds (seed, seed+1, ...) and each
member's configuration."""

from kfp import dsl

from cloudml.cluster.settings import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def member_seeds(config_json: str) -> list[int]:
    """List the training seeds of the ensemble's members.

    Args:
        config_json: The validated configuration (its seed and ensemble_size).

    Returns:
        Output: [seed, seed+1, ..., seed+ensemble_size-1], one training chain each.
    """
    from cloudml.steps import member_seeds as seeds
    from cloudml.steps.common import config_from_json

    cfg = config_from_json(config_json)
    return seeds(cfg.train.seed, cfg.train.ensemble_size)


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def member_config(config_json: str, seed: int) -> str:
    """One member's configuration: the model's, with the member's training seed.

    Args:
        config_json: The validated configuration of the model (the ensemble).
        seed: The member's training seed.

    Returns:
        Output: The member's configuration as JSON (pretrain's and finetune's input).
    """
    from cloudml.steps.experiments import run_member_config

    return run_member_config(config_json, seed)
