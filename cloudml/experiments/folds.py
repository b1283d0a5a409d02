"""Leave-one-flight-out folds: each flight of the campaign held out once.

A fold trains on every other flight (ingest's scalers are per frame; the training scalers
are fitted in pretrain/finetune on the fold's training flights only, so they never see the
held-out flight) and is scored on the held-out one. When the held-out flight is the
pretraining (or overweighted) flight, the fold pretrains (overweights) the next flight of
the campaign order instead: pretraining on the scored flight would leak it into the
weights, and skipping pretraining would make that fold a different procedure from the rest.

`training_fold_configs` makes the folds the sweep ranks on when asked (pipeline
`sweep-lofo`): leave-one-flight-out over a variant's TRAINING flights only. The validation
flight is removed from every fold's `flights`, so no fold trains on, selects on or is
scored on it; the ranking is the folds' mean R² on their held-out training flights.
"""

from __future__ import annotations

import json

from cloudml.config import build_config
from cloudml.errors import ConfigError
from cloudml.experiments import item_label


def substitute(flights: tuple[str, ...], held_out: str, wanted: str) -> str:
    """`wanted` unless it is the held-out flight; then the next flight after it (cyclic)."""
    if wanted != held_out:
        return wanted
    i = flights.index(held_out)
    return flights[(i + 1) % len(flights)]


def fold_overrides(flights: tuple[str, ...], pretrain: str, overweight: str) -> dict[str, dict]:
    """{held-out flight: the overrides of its fold} for every flight (pure)."""
    if len(flights) < 2:
        raise ConfigError(f"flights: leave-one-flight-out needs at least two, got {list(flights)}")
    return {
        f: {
            "validation_flight": f,
            "pretrain_flight": substitute(flights, f, pretrain),
            "overweight_flight": substitute(flights, f, overweight),
        }
        for f in flights
    }


def fold_configs(base_json: str) -> list[str]:
    """One validated config JSON per fold of the base config's flights, labelled
    `lofo.<held-out flight>`, in campaign order."""
    base = json.loads(base_json)
    base.pop("preset", None)
    flights = tuple(base["flights"])
    folds = fold_overrides(flights, base["pretrain_flight"], base["overweight_flight"])
    return [
        build_config({**base, **over}, preset=item_label("lofo", f)).to_json()
        for f, over in folds.items()
    ]


def training_fold_configs(config_json: str) -> list[str]:
    """Leave-one-flight-out over the config's training flights (pure): one validated config
    JSON per training flight, whose `flights` are the training flights only (the validation
    flight is in none of them), labelled `<config label>.lofo.<held-out flight>`."""
    base = json.loads(config_json)
    label = base.pop("preset", "")
    held = base["validation_flight"]
    flights = tuple(f for f in base["flights"] if f != held)
    if len(flights) < 2:
        raise ConfigError(
            f"flights: ranking on leave-one-flight-out needs at least two training flights "
            f"besides validation flight {held}, got {list(flights)}"
        )
    base["flights"] = list(flights)
    folds = fold_overrides(flights, base["pretrain_flight"], base["overweight_flight"])
    return [
        build_config({**base, **over}, preset=f"{label}.lofo.{f}").to_json()
        for f, over in folds.items()
    ]
