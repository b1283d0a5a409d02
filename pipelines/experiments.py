"""The experiment pipelines: the train-evaluate chain (pipelines/chain.py) under a ParallelFor
over configs, then a fan-in.

    sweep: resolve-config (base preset tuned) -> sweep-configs (one config per variant)
        -> ParallelFor(configs, parallelism): train-evaluate
        -> rank-variants (selection scores only) -> pick-winner -> gate -> promote
                                                  \\-> compare-variants (HTML, Metrics, CSV)
    lofo:  resolve-config -> lofo-configs (one config per held-out flight)
        -> ParallelFor(configs, parallelism): train-evaluate -> lofo-report (gate_mean)

Parameters: every config key (defaults from tuned: the base every variant / fold changes),
the training pipeline's extra parameters, plus `variants` (sweep) or `gate_mean` (lofo).
`parallelism` bounds the models trained at once, each training one member at a time, so it
is the number of GPUs the run takes (CLOUDML_GPU_PARALLELISM at compile time, default 4).
Compile: `python -m pipelines.training sweep OUT.yaml` or `cloudml compile --pipeline lofo`.
"""

from __future__ import annotations

from typing import Any

from kfp import dsl

from cloudml.cluster import settings as platform
from cloudml.experiments import BASE_PRESET
from cloudml.experiments.variants import default_variants
from components.experiments import (
    compare_variants,
    lofo_configs,
    lofo_report,
    pick_winner,
    rank_variants,
    sweep_configs,
)
from pipelines.chain import RETRY, SMALL_TASK, build_train_evaluate, on_cpu
from pipelines.training import (
    _resolved_config,
    args_docstring,
    gate_and_promote,
    gate_settings,
    pipeline_name,
    pipeline_parameters,
    signed,
)

EXPERIMENT_HELP = {
    "variants": "Sweep: the variants, a list of {name, overrides}: each a set of config "
    "overrides of the other parameters (flights, validation_flight, val_fraction and scale "
    "are shared). Default: tuned and the seed's five alternatives.",
    "gate_mean": "Leave-one-flight-out: fail the run unless the mean R² over the held-out "
    "flights is above threshold (off: the report is the result).",
}


def experiment_parameters(kind: str) -> dict[str, tuple[type, Any]]:
    """{name: (type, default)}: the base preset's parameters plus the experiment's own."""
    params = pipeline_parameters(BASE_PRESET)
    if kind == "sweep":
        params["variants"] = (list, default_variants())
    else:
        params["gate_mean"] = (bool, False)
    return params


def _chains(p: dict[str, Any], configs: dsl.PipelineTask, chain: Any, name: str, par: int):
    """train-evaluate per config of `configs` (a task output list), at most `par` at once.
    The loop body takes only the loop item and pipeline parameters (see pipelines/chain.py)."""
    with dsl.ParallelFor(configs.output, name=name, parallelism=par) as config_json:
        te = chain(config_json=config_json, flights=p["flights"], raw_uri=p["raw_uri"],
                   **gate_settings(p))  # fmt: skip
        te.set_display_name("train-evaluate")
    return te


def _sweep(p: dict[str, Any], retry: Any, chain: Any, par: int) -> None:
    cfg = _resolved_config(BASE_PRESET, p)
    configs = sweep_configs(config_json=cfg.output, variants=p["variants"])
    on_cpu(configs.set_display_name("sweep-configs"), SMALL_TASK)
    te = _chains(p, configs, chain, "train-each-variant", par)
    # The ranking's only input is the selection-split scores: the validation flight cannot
    # reach it (tests/test_sweep_pipeline.py checks the compiled DAG).
    rk = on_cpu(rank_variants(scores=dsl.Collected(te.outputs["selection"])), SMALL_TASK)
    rk.set_display_name("rank-variants")
    cmp = compare_variants(scores=dsl.Collected(te.outputs["selection"]),
                           evaluations=dsl.Collected(te.outputs["evaluation"]))  # fmt: skip
    on_cpu(cmp.set_display_name("compare-variants"), SMALL_TASK)
    win = pick_winner(winner=rk.output, evaluations=dsl.Collected(te.outputs["evaluation"]),
                      models=dsl.Collected(te.outputs["model"]))  # fmt: skip
    on_cpu(win.set_display_name("pick-winner"), SMALL_TASK)
    gate_and_promote(win, p, "sweep", retry)


def _lofo(p: dict[str, Any], retry: Any, chain: Any, par: int) -> None:
    cfg = _resolved_config(BASE_PRESET, p)
    configs = on_cpu(lofo_configs(config_json=cfg.output), SMALL_TASK)
    configs.set_display_name("lofo-configs")
    te = _chains(p, configs, chain, "train-each-fold", par)
    # No retry: a failed mean gate is a verdict.
    rep = lofo_report(evaluations=dsl.Collected(te.outputs["evaluation"]),
                      gate_mean=p["gate_mean"], threshold=p["threshold"])  # fmt: skip
    on_cpu(rep.set_display_name("lofo-report"), SMALL_TASK)


def build_experiment(kind: str, retries: bool = True, parallelism: int | None = None):
    """The `sweep` or `lofo` pipeline as a KFP graph component (callable, compilable).
    `parallelism`: models trained at once (default cluster.settings.gpu_parallelism());
    each trains its members one after another, so a run takes at most that many GPUs."""
    params = experiment_parameters(kind)
    names = list(params)
    retry = RETRY if retries else None
    par = parallelism or platform.gpu_parallelism()
    chain = build_train_evaluate(retry, 1)
    body = _sweep if kind == "sweep" else _lofo

    def experiment(*args: Any) -> None:
        body(dict(zip(names, args, strict=True)), retry, chain, par)

    summary = (
        "CloudML sweep: train and evaluate every variant (overrides of preset tuned) in "
        "parallel on the GPU pool, rank them on the selection split (never the validation "
        "flight), compare, gate and promote the winner."
        if kind == "sweep"
        else "CloudML leave-one-flight-out: for each flight, train on the others and evaluate "
        "on it, in parallel on the GPU pool; report per-flight R², MAE, bias with intervals "
        "and their mean and spread."
    )
    doc = args_docstring(summary, names, EXPERIMENT_HELP)
    return signed(experiment, params, pipeline_name(kind), doc)
