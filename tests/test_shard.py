import h5py
import numpy as np
import pytest

from cloudml.data.shard import Shard, read_shard, write_shard
from cloudml.errors import DataError


def _shard(n=7, t=3, h=4, w=5) -> Shard:
    rng = np.random.default_rng(0)
    f_count = n + t - 1
    idx = np.arange(n)[:, None] + np.arange(t)[None, :]
    return Shard(
        flight="30Oct24",
        frame_table=rng.normal(size=(f_count, h, w)).astype(np.float32),
        frame_index=idx,
        cbh_km=rng.uniform(0.1, 2.0, n),
        sza_deg=rng.uniform(30, 70, n),
        saa_deg=rng.uniform(0, 360, n),
        time_utc=1.73e9 + np.arange(n, dtype=float),
        dt_match_s=rng.uniform(-0.5, 0.5, n),
        config={"temporal_frames": t},
        summary={"n_samples": n},
        raw_sha256={"a.h5": "00"},
    )


def test_round_trip_and_virtual_frames(tmp_path):
    s = _shard()
    p = write_shard(tmp_path / "s.h5", s)
    r = read_shard(p)
    np.testing.assert_array_equal(r.frame_table, s.frame_table)
    np.testing.assert_array_equal(r.frame_index, s.frame_index)
    np.testing.assert_array_equal(r.cbh_km, s.cbh_km)
    assert (r.flight, r.config, r.summary, r.raw_sha256) == (
        s.flight,
        s.config,
        s.summary,
        s.raw_sha256,
    )
    with h5py.File(p) as f:
        frames = f["frames"][()]
    assert frames.shape == (7, 3, 4, 5)
    np.testing.assert_array_equal(frames, s.windows())
    np.testing.assert_array_equal(r.windows(np.array([2])), s.frame_table[[[2, 3, 4]]])


def test_invalid_shard_is_not_written(tmp_path):
    s = _shard()
    s.cbh_km = s.cbh_km[:-1]
    with pytest.raises(DataError, match="cbh_km must have shape"):
        write_shard(tmp_path / "s.h5", s)
    assert list(tmp_path.iterdir()) == []


def test_read_errors_name_file(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="bad.h5"):
        read_shard(bad)
    p = write_shard(tmp_path / "s.h5", _shard())
    with h5py.File(p, "a") as f:
        del f["sza_deg"]
    with pytest.raises(DataError, match=r"missing dataset\(s\) \['sza_deg'\]"):
        read_shard(p)
