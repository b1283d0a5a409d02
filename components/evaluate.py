"""evaluate: the ensemble's finetuned members on the validation flight -> metrics (with
95% intervals and the ridge baseline), report, model card, and the shipped model (every
member with its sha256).

R², its interval, the std ratio and the baseline's R² also come back as float parameter
outputs: the gate compares those.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from cloudml.cluster.settings import gpu_image


@dsl.component(base_image=gpu_image(), install_kfp_package=False)
def evaluate(
    shards: Input[list[Dataset]],
    config_json: str,
    members: Input[list[Model]],
    threshold: float,
    min_std_ratio: float,
    beat_baseline: bool,
    skill_margin: float,
    run_id: str,
    metrics: Output[Metrics],
    report: Output[HTML],
    model_card: Output[Markdown],
    evaluation: Output[Dataset],
    model: Output[Model],
) -> NamedTuple(
    "EvalOutputs",
    [
        ("r2", float),
        ("r2_lo", float),
        ("r2_hi", float),
        ("std_ratio", float),
        ("baseline_r2", float),
    ],
):
    from collections import namedtuple

    from cloudml.steps import run_evaluate

    # the body runs alone (KFP ships only this function's source), so the list lives here
    logged = ("r2", "r2_lo", "r2_hi", "mae_km", "mae_km_lo", "mae_km_hi", "rmse_km", "rmse_km_lo",
              "rmse_km_hi", "bias_km", "loss", "std_ratio", "n", "ensemble_size", "member_r2_min",
              "member_r2_median", "member_r2_max", "baseline_r2")  # fmt: skip

    m = run_evaluate(
        [s.path for s in shards],
        config_json,
        [x.path for x in members],
        evaluation.path,
        threshold,
        min_std_ratio,
        report.path,
        model_card.path,
        model_dir=model.path,
        beat_baseline=beat_baseline,
        skill_margin=skill_margin,
        run_id=run_id,
    )
    for key in logged:
        if key in m:
            metrics.log_metric(key, float(m[key]))
    for x in m["members"]:
        metrics.log_metric(f"member_seed{x['seed']}_r2", float(x["r2"]))
    model.metadata.update({"ensemble_size": int(m["ensemble_size"]), "r2": float(m["r2"])})
    out = namedtuple("EvalOutputs", ["r2", "r2_lo", "r2_hi", "std_ratio", "baseline_r2"])
    return out(*(float(m[k]) for k in ("r2", "r2_lo", "r2_hi", "std_ratio", "baseline_r2")))
