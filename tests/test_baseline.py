"""The ridge baseline: exact features, exact fit, and the validation flight kept out."""

import numpy as np
import pytest

from cloudml.baseline import FEATURES, fit_baseline, fit_ridge, frame_features, shard_features
from cloudml.errors import DataError
from tests.support.train_fixtures import make_shard


def test_features_of_a_known_frame():
    f = np.zeros((1, 4, 4))
    f[0, 1:3, 1:3] = 4.0  # the central half is 4, the border 0
    x = frame_features(f, np.array([30.0]), np.array([90.0]))[0]
    got = dict(zip(FEATURES, x, strict=True))
    assert got["mean"] == 1.0 and got["max"] == 4.0 and got["min"] == 0.0
    assert got["centre_minus_border"] == 4.0
    assert got["sza"] == 30.0 and got["cos_saa"] == pytest.approx(0.0, abs=1e-12)
    assert got["sin_saa"] == 1.0


def test_ridge_recovers_a_linear_law():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    y = 2.0 + x @ np.array([1.0, -0.5, 0.0])
    mean, scale, coef, intercept = fit_ridge(x, y, alpha=1e-9)
    pred = ((x - mean) / scale) @ coef + intercept
    np.testing.assert_allclose(pred, y, atol=1e-6)


def test_baseline_uses_the_centre_frame_and_is_deterministic():
    shards = [make_shard(f, n=60, seed=i) for i, f in enumerate(["30Oct24", "04Nov24"])]
    val = make_shard("12Feb25", n=40, seed=9)
    a, b = fit_baseline(shards), fit_baseline(shards)
    np.testing.assert_array_equal(a.predict(val), b.predict(val))
    assert a.flights == ("30Oct24", "04Nov24")
    centre = val.frame_index[:, val.temporal_frames // 2]
    np.testing.assert_allclose(
        shard_features(val)[:, 0], val.frame_table[centre].reshape(40, -1).mean(axis=1), rtol=1e-5
    )


def test_too_few_training_samples_is_a_data_error():
    with pytest.raises(DataError, match="baseline: 5 training samples"):
        fit_baseline([make_shard("30Oct24", n=5, seed=0)])


def test_features_in_chunks_equal_one_call():
    val = make_shard("12Feb25", n=40, seed=3)
    centre = val.frame_index[:, val.temporal_frames // 2]
    whole = frame_features(val.frame_table[centre], val.sza_deg, val.saa_deg)
    for chunk in (1, 7, 40, 1000):  # a partial last chunk, one sample, bigger than the shard
        np.testing.assert_array_equal(shard_features(val, chunk=chunk), whole)


def test_a_generator_of_shards_is_held_one_at_a_time():
    """evaluate passes a generator that reads each training shard: fit_baseline must not
    keep a shard alive once its features are taken (else every flight is in memory)."""
    import gc
    import weakref

    alive: list[int] = []
    refs: list[weakref.ref] = []

    def shards():
        for i, f in enumerate(["30Oct24", "04Nov24", "18Feb25"]):
            gc.collect()
            alive.append(sum(r() is not None for r in refs))  # earlier shards still alive
            s = make_shard(f, n=30, seed=i)
            refs.append(weakref.ref(s))
            yield s
            del s

    model = fit_baseline(shards())
    assert model.flights == ("30Oct24", "04Nov24", "18Feb25")
    assert alive == [0, 0, 0]
    listed = fit_baseline([make_shard(f, n=30, seed=i)
                           for i, f in enumerate(["30Oct24", "04Nov24", "18Feb25"])])  # fmt: skip
    np.testing.assert_array_equal(model.coef, listed.coef)
