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
    """Score the ensemble (the members' mean prediction) once on validation_flight, with 95%
    block-bootstrap intervals and the ridge baseline beside it; write the report, the model
    card and the shipped model.

    Args:
        shards: Every flight's shard: validation_flight is scored, the training flights fit
            the ridge baseline.
        config_json: The run's validated configuration.
        members: The finetuned members (their sha256s are checked).
        threshold: The gate's R² threshold (the report states the verdict it implies).
        min_std_ratio: The gate's collapse check.
        beat_baseline: Whether the gate requires beating the ridge baseline.
        skill_margin: By how much (R²) the baseline must be beaten.
        run_id: The KFP run id, recorded in the report and model card.

    Returns:
        metrics: R², MAE, RMSE and bias (km) with 95% bounds, std ratio, n, each member's R²,
            the baseline's R², and the bias per true-height range (bias_km_true_<range>,
            n_true_<range>).
        report: The HTML report (plots, tables, verdict).
        model_card: The Markdown model card.
        evaluation: metrics.json, predictions.csv, plots, stages.json, gate.json.
        model: The shipped ensemble: ensemble.json and member-<i>.pt.
        r2: The ensemble's R² on validation_flight.
        r2_lo: Lower end of R²'s 95% interval.
        r2_hi: Upper end of R²'s 95% interval.
        std_ratio: std(prediction) / std(truth).
        baseline_r2: The ridge baseline's R² on validation_flight.
    """
    from collections import namedtuple

    from cloudml.steps import run_evaluate
    from cloudml.steps.evaluation import ui_metrics

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
    for key, value in ui_metrics(m).items():
        metrics.log_metric(key, value)
    model.metadata.update({"ensemble_size": int(m["ensemble_size"]), "r2": float(m["r2"])})
    out = namedtuple("EvalOutputs", ["r2", "r2_lo", "r2_hi", "std_ratio", "baseline_r2"])
    return out(*(float(m[k]) for k in ("r2", "r2_lo", "r2_hi", "std_ratio", "baseline_r2")))
