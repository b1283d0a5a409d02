"""Experiments as pipelines: the sweep over named variants and leave-one-flight-out.

Each experiment is many independent trainings of the one train-and-evaluate chain, each on
its own config. This package holds what is computed about them (no KFP, no I/O beyond the
variants file): the variants and folds as configs (variants.py, folds.py), the ranking on
the selection split or, in pipeline sweep-lofo, on leave-one-flight-out over the training
flights (ranking.py) and the comparison tables (tables.py).

Every config an experiment trains is labelled in its `preset` field as
`<experiment>.<item>` (`sweep.pure_mae`, `lofo.12Feb25`): the stages record it, and the
telemetry turns it into the bounded `variant` label (cloudml.cluster.telemetry).
"""

from __future__ import annotations

import re

EXPERIMENTS = ("sweep", "lofo", "sweep-lofo")  # the reserved pipeline names
# sweep-lofo: the sweep ranked on leave-one-flight-out over the training flights instead of
# the selection split (its variants are labelled sweep.<name>, like the sweep's)
SWEEPS = ("sweep", "sweep-lofo")
BASE_PRESET = "tuned"  # the preset both experiments start from
LABEL_SEP = "."
ITEM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")  # a bounded label value


def is_experiment(pipeline: str) -> bool:
    return pipeline in EXPERIMENTS


def is_sweep(pipeline: str) -> bool:
    return pipeline in SWEEPS


def ranked_on(pipeline: str) -> str:
    """What a sweep pipeline ranks its variants on: "selection" or "lofo"."""
    return "lofo" if pipeline == "sweep-lofo" else "selection"


def base_preset(pipeline: str) -> str:
    """The preset whose keys are a pipeline's parameters: `tuned` for an experiment."""
    return BASE_PRESET if is_experiment(pipeline) else pipeline


def item_label(experiment: str, item: str) -> str:
    """The `preset` label of one variant / fold's config: `sweep.pure_mae`."""
    return f"{experiment}{LABEL_SEP}{item}"


def split_label(preset: str) -> tuple[str, str | None]:
    """`sweep.pure_mae` -> ("sweep", "pure_mae"); a plain preset -> (preset, None)."""
    head, sep, tail = preset.partition(LABEL_SEP)
    if sep and head in EXPERIMENTS and tail:
        return head, tail
    return preset, None
