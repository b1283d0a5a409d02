"""The experiment pipelines: the train-evaluate chain (pipelines/chain.py) under a ParallelFor
over configs, then a fan-in.

    sweep: resolve-config (base preset tuned) -> sweep-configs (one config per variant)
        -> ParallelFor(configs, parallelism): train-evaluate
        -> rank-variants (selection scores only) -> pick-winner -> gate -> promote
                                                  \\-> compare-variants (HTML, Metrics, CSV)
    lofo:  resolve-config -> lofo-configs (one config per held-out flight)
        -> ParallelFor(configs, parallelism): train-evaluate -> lofo-report (gate_mean)
    sweep-lofo: the sweep, each variant also scored by lofo-training-flights (a sub-pipeline:
        training-fold-configs -> ParallelFor(folds, parallelism): train-evaluate -> lofo-score,
        every fold holding out one TRAINING flight); rank-variants takes only those scores

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
from cloudml.experiments import BASE_PRESET, is_sweep, ranked_on
from cloudml.experiments.variants import default_variants
from components.experiments import (
    compare_variants,
    lofo_configs,
    lofo_report,
    pick_winner,
    rank_variants,
    sweep_configs,
)
from pipelines.chain import RETRY, SMALL_TASK, build_lofo_scorer, build_train_evaluate, on_cpu
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
    if is_sweep(kind):
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


def _sweep(p: dict[str, Any], retry: Any, chain: Any, par: int, scorer: Any = None) -> None:
    """The sweep; with `scorer` (build_lofo_scorer's sub-pipeline: sweep-lofo) each variant
    is also scored on its training flights' folds, and ranked on that score alone."""
    cfg = _resolved_config(BASE_PRESET, p)
    configs = sweep_configs(config_json=cfg.output, variants=p["variants"])
    on_cpu(configs.set_display_name("sweep-configs"), SMALL_TASK)
    on = "selection" if scorer is None else "lofo"
    with dsl.ParallelFor(configs.output, name="train-each-variant", parallelism=par) as config_json:
        te = chain(config_json=config_json, flights=p["flights"], raw_uri=p["raw_uri"],
                   **gate_settings(p))  # fmt: skip
        te.set_display_name("train-evaluate")
        if scorer is not None:
            ls = scorer(config_json=config_json, flights=p["flights"], raw_uri=p["raw_uri"],
                        **gate_settings(p))  # fmt: skip
            ls.set_display_name("lofo-training-flights")
    # The ranking's only input is the scores it ranks on (selection split, or the folds of
    # the training flights): the validation flight cannot reach it (tests/test_sweep_pipeline.py
    # checks the compiled DAG).
    ranked = dsl.Collected(te.outputs["selection"] if scorer is None else ls.output)
    rk = on_cpu(rank_variants(scores=ranked, ranked_on=on), SMALL_TASK)
    rk.set_display_name("rank-variants")
    extra = {} if scorer is None else {"lofo_scores": dsl.Collected(ls.output)}
    cmp = compare_variants(scores=dsl.Collected(te.outputs["selection"]),
                           evaluations=dsl.Collected(te.outputs["evaluation"]),
                           **extra)  # fmt: skip
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
    # built here: a sub-pipeline cannot be defined inside the pipeline that calls it
    scorer = build_lofo_scorer(chain, par) if ranked_on(kind) == "lofo" else None

    def experiment(*args: Any) -> None:
        p = dict(zip(names, args, strict=True))
        if is_sweep(kind):
            _sweep(p, retry, chain, par, scorer)
        else:
            _lofo(p, retry, chain, par)

    summary = (
        "CloudML sweep: train and evaluate every variant (overrides of preset tuned) in "
        "parallel on the GPU pool, rank them on the selection split (never the validation "
        "flight), compare, gate and promote the winner."
        if kind == "sweep"
        else "CloudML sweep ranked on leave-one-flight-out: train and evaluate every variant "
        "(overrides of preset tuned) in parallel on the GPU pool, score each on folds that "
        "hold out one training flight at a time (never the validation flight), rank on their "
        "mean R², compare, gate and promote the winner."
        if kind == "sweep-lofo"
        else "CloudML leave-one-flight-out: for each flight, train on the others and evaluate "
        "on it, in parallel on the GPU pool; report per-flight R², MAE, bias with intervals "
        "and their mean and spread."
    )
    doc = args_docstring(summary, names, EXPERIMENT_HELP)
    return signed(experiment, params, pipeline_name(kind), doc)
