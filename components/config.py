"""resolve-config: the pipeline's parameters -> one validated Config as JSON.

Every stage takes that JSON, so the UI-edited values are checked once, up front, with every
problem listed. The parameter list mirrors cloudml.config (tests/test_pipeline_compile.py
fails, naming the key, when a config key is missing here).
"""

from kfp import dsl

from cloudml.cluster.settings import cpu_image
from cloudml.config import key_help


def resolve_config(
    preset: str,
    temporal_frames: int,
    swath_slice: list,
    flat_field_correction: bool,
    clahe_clip_limit: float,
    zscore_normalize: bool,
    augment: bool,
    filter_type: str,
    pretrain_flight: str,
    overweight_flight: str,
    validation_flight: str,
    flights: list,
    scale: str,
    memory_optimized: bool,
    use_spatial_attention: bool,
    use_temporal_attention: bool,
    use_multiscale_temporal: bool,
    attention_heads: int,
    gradient_checkpointing: bool,
    torch_compile: bool,
    torch_compile_mode: str,
    learning_rate: float,
    warmup_steps: int,
    weight_decay: float,
    epochs: int,
    batch_size: int,
    plateau_factor: float,
    plateau_patience: int,
    loss_type: str,
    loss_alpha: float,
    huber_delta: float,
    grad_clip: float,
    ema_decay: float,
    early_stopping_patience: int,
    early_stopping_min_delta: float,
    early_stopping_after_warmup: bool,
    overweight_factor: float,
    val_fraction: float,
    mixed_precision: bool,
    mixed_precision_cpu: bool,
    seed: int,
    ensemble_size: int,
) -> str:
    values = dict(locals())
    from cloudml.steps import resolve_config_json

    return resolve_config_json(values.pop("preset"), values)


# The docstring is built from cloudml.config so each key's one description reaches the UI
# (kfp reads the Args section at decoration time); hence decorating by call, after it is set.
resolve_config.__doc__ = "\n".join(
    [
        "Check the pipeline's parameter values as one configuration, every problem listed at "
        "once: a bad value fails the run here, before any data moves.",
        "",
        "Args:",
        "    preset: The preset the pipeline was compiled from (recorded in the config).",
        *(f"    {k}: {h}" for k, h in key_help().items()
          if k in resolve_config.__code__.co_varnames),
        "",
        "Returns:",
        "    Output: The validated configuration as JSON, the input of every later stage.",
    ]
)  # fmt: skip
resolve_config = dsl.component(base_image=cpu_image(), install_kfp_package=False)(resolve_config)
