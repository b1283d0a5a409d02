"""evaluate: final checkpoint on the validation flight -> metrics, report, model card.

R² and the std ratio also come back as float parameter outputs: the gate compares those.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from cloudml.cluster.settings import gpu_image


@dsl.component(base_image=gpu_image(), install_kfp_package=False)
def evaluate(
    shards: Input[list[Dataset]],
    config_json: str,
    pretrained: Input[Model],
    finetuned: Input[Model],
    threshold: float,
    min_std_ratio: float,
    metrics: Output[Metrics],
    report: Output[HTML],
    model_card: Output[Markdown],
    evaluation: Output[Dataset],
) -> NamedTuple("EvalOutputs", [("r2", float), ("std_ratio", float)]):
    from collections import namedtuple

    from cloudml.steps import run_evaluate

    m = run_evaluate(
        [s.path for s in shards],
        config_json,
        pretrained.path,
        finetuned.path,
        evaluation.path,
        threshold,
        min_std_ratio,
        report.path,
        model_card.path,
    )
    for key in ("r2", "mae_km", "rmse_km", "loss", "std_ratio", "n"):
        metrics.log_metric(key, float(m[key]))
    return namedtuple("EvalOutputs", ["r2", "std_ratio"])(float(m["r2"]), float(m["std_ratio"]))
