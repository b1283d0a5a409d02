"""The experiment tasks (sweep and leave-one-flight-out): each calls one function of
cloudml.steps.experiments. All run on CPU: they read small JSON and copy artifacts."""

from typing import NamedTuple, Optional

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from cloudml.cluster.settings import cpu_image


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def sweep_configs(config_json: str, variants: list) -> list:
    """Expand the base configuration into one validated configuration per variant (every
    problem of every variant listed at once, before anything trains).

    Args:
        config_json: The base configuration (resolve-config's output).
        variants: The variants, [{name, overrides}], each a set of overrides of the base.

    Returns:
        Output: One configuration JSON per variant, labelled sweep.<name>.
    """
    from cloudml.steps.experiments import run_sweep_configs

    return run_sweep_configs(config_json, variants)


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def lofo_configs(config_json: str) -> list:
    """Expand the base configuration into one fold per flight: that flight held out and
    scored, every other flight trained on.

    Args:
        config_json: The base configuration (resolve-config's output).

    Returns:
        Output: One configuration JSON per held-out flight, labelled lofo.<flight>.
    """
    from cloudml.steps.experiments import run_lofo_configs

    return run_lofo_configs(config_json)


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def training_fold_configs(config_json: str) -> list:
    """Expand one variant's configuration into leave-one-flight-out folds over its training
    flights: each holds out one training flight; none contains the validation flight.

    Args:
        config_json: The variant's configuration.

    Returns:
        Output: One configuration JSON per held-out training flight, labelled
            <variant label>.lofo.<flight>.
    """
    from cloudml.steps.experiments import run_training_fold_configs

    return run_training_fold_configs(config_json)


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def lofo_score(config_json: str, evaluations: Input[list[Dataset]]) -> str:
    """Score one variant on leave-one-flight-out over its training flights: the mean R² of
    its folds, each on its held-out training flight (never the validation flight).

    Args:
        config_json: The variant's configuration (its label names the variant).
        evaluations: Its folds' evaluations.

    Returns:
        Output: JSON {label, lofo_r2 (mean, min, max), folds}.
    """
    from cloudml.steps.experiments import run_lofo_score

    return run_lofo_score(config_json, [e.path for e in evaluations])


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def selection_score(config_json: str, members: Input[list[Model]]) -> str:
    """Score one model on the selection split (the held-out tails of the training flights):
    the members' mean R² at their kept epoch; never reads the validation flight.

    Args:
        config_json: The model's configuration (its preset label names the variant).
        members: The finetuned members (their summary and history are read).

    Returns:
        Output: JSON {label, selection_r2 (mean, min, max), selection_loss, train_seconds}.
    """
    from cloudml.steps.experiments import run_selection_score

    return run_selection_score(config_json, [m.path for m in members])


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def rank_variants(scores: list, ranked_on: str = "selection") -> str:
    """Pick the sweep's winner on the scores alone (its only input): the selection-split
    scores, or the leave-one-training-flight-out scores (sweep-lofo).

    Args:
        scores: Every variant's score (selection-score's or lofo-score's outputs).
        ranked_on: Which score they are: selection or lofo.

    Returns:
        Output: The winning variant's label (sweep.<name>).
    """
    from cloudml.steps.experiments import run_rank

    return run_rank(scores, ranked_on)


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def compare_variants(
    scores: list,
    evaluations: Input[list[Dataset]],
    metrics: Output[Metrics],
    report: Output[HTML],
    table: Output[Dataset],
    lofo_scores: Optional[list] = None,  # noqa: UP045 - kfp 2.17 cannot parse `list | None`
):
    """Write the comparison table: per variant the figures it was ranked on (selection
    split, or leave-one-training-flight-out), the validation flight's figures with
    intervals (not used for ranking), training time.

    Args:
        scores: Every variant's selection-split score.
        evaluations: Every variant's evaluation (validation-flight metrics).
        lofo_scores: sweep-lofo: every variant's leave-one-training-flight-out score (ranked on).

    Returns:
        metrics: Per variant <name>_selection_r2 and <name>_val_r2_not_ranked.
        report: The comparison as an HTML page.
        table: comparison.csv and comparison.json, one row per variant in rank order.
    """
    from cloudml.steps.experiments import run_compare

    _, shown = run_compare(scores, [e.path for e in evaluations], table.path, report.path,
                           lofo_scores)  # fmt: skip
    for key, value in shown.items():
        metrics.log_metric(key, value)


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def pick_winner(
    winner: str,
    evaluations: Input[list[Dataset]],
    models: Input[list[Model]],
    model: Output[Model],
) -> NamedTuple(
    "Winner",
    [("r2", float), ("r2_lo", float), ("r2_hi", float), ("std_ratio", float),
     ("baseline_r2", float)],
):  # fmt: skip
    """Hand the winning variant's ensemble and its validation figures to the gate.

    Args:
        winner: The winning label (rank-variants' output).
        evaluations: Every variant's evaluation.
        models: Every variant's ensemble.

    Returns:
        model: The winner's ensemble (ensemble.json, member-<i>.pt, config.json).
        r2: The winner's R² on the validation flight.
        r2_lo: Lower end of its 95% interval.
        r2_hi: Upper end of its 95% interval.
        std_ratio: std(prediction) / std(truth).
        baseline_r2: The ridge baseline's R².
    """
    from collections import namedtuple

    from cloudml.steps.experiments import GATE_KEYS, run_pick_winner

    got = run_pick_winner(winner, [e.path for e in evaluations], [m.path for m in models],
                          model.path)  # fmt: skip
    return namedtuple("Winner", GATE_KEYS)(*(got[k] for k in GATE_KEYS))


@dsl.component(base_image=cpu_image(), install_kfp_package=False)
def lofo_report(
    evaluations: Input[list[Dataset]],
    gate_mean: bool,
    threshold: float,
    metrics: Output[Metrics],
    report: Output[HTML],
    table: Output[Dataset],
):
    """Write the leave-one-flight-out report: per held-out flight R², MAE, bias with 95%
    intervals and n, and their mean and spread; with gate_mean, fail unless mean R² >
    threshold.

    Args:
        evaluations: Every fold's evaluation on its held-out flight.
        gate_mean: Fail the run unless the mean R² over the folds is above threshold.
        threshold: The mean R² threshold (with gate_mean).

    Returns:
        metrics: <flight>_r2, <flight>_mae_km per fold; mean_, std_, min_, max_ of R², MAE, bias.
        report: The report as an HTML page.
        table: lofo.csv, lofo.json (one row per fold) and lofo_summary.json.
    """
    from cloudml.steps.experiments import run_lofo_report

    _, shown, verdict = run_lofo_report([e.path for e in evaluations], table.path, report.path,
                                        gate_mean, threshold)  # fmt: skip
    for key, value in shown.items():
        metrics.log_metric(key, value)
    print(verdict)
