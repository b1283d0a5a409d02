"""Every numeric config key has sane bounds (cloudml.config.NUMERIC_BOUNDS), checked at both
ends: the bound itself is accepted when inclusive and refused when exclusive, the nearest
value beyond it is refused, with the key named."""

from __future__ import annotations

import math
import typing
from dataclasses import fields

import pytest

from cloudml.config import NUMERIC_BOUNDS, SECTIONS, build_config, load_config
from cloudml.errors import ConfigError


def _numeric_keys() -> dict[str, type]:
    out = {}
    for cls in SECTIONS.values():
        hints = typing.get_type_hints(cls)
        out |= {f.name: hints[f.name] for f in fields(cls) if hints[f.name] in (int, float)}
    return out


NUMERIC = _numeric_keys()


def test_every_numeric_key_has_bounds_and_every_bound_is_a_key():
    assert sorted(NUMERIC_BOUNDS) == sorted(NUMERIC)


def _ok(key, value) -> bool:
    base = load_config("tuned").flat()
    try:
        build_config({**base, key: value})
    except ConfigError as e:
        assert f"{key}: must be" in str(e), str(e)
        return False
    return True


def _beyond(typ, bound: float, direction: float) -> float:
    """The nearest value of the key's type past `bound` in `direction` (-1 below, +1 above)."""
    return bound + direction if typ is int else math.nextafter(bound, direction * math.inf)


@pytest.mark.parametrize("key", sorted(NUMERIC_BOUNDS))
def test_bounds_hold_at_both_ends(key):
    lo, hi, lo_in, hi_in = NUMERIC_BOUNDS[key]
    typ = NUMERIC[key]
    assert _ok(key, lo) is lo_in
    assert _ok(key, hi) is hi_in
    assert not _ok(key, _beyond(typ, lo, -1))
    assert not _ok(key, _beyond(typ, hi, +1))


@pytest.mark.parametrize("key", sorted(k for k, t in NUMERIC.items() if t is float))
def test_nan_and_inf_are_refused(key):
    assert not _ok(key, math.nan)
    assert not _ok(key, math.inf)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("temporal_frames=100000", "temporal_frames: must be <= 32, got 100000"),
        ("batch_size=1000000000", "batch_size: must be <= 4096, got 1000000000"),
        ("seed=-1", "seed: must be >= 0, got -1"),
    ],
)
def test_absurd_values_from_the_outside_corpus_are_refused(override, needle):
    with pytest.raises(ConfigError, match="1 problem") as e:
        load_config("tuned", [override])
    assert needle in str(e.value)
