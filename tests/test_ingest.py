import re

import h5py
import numpy as np
import pytest

from cloudml.cli import main
from cloudml.config import load_config
from cloudml.data import layout
from cloudml.data import preprocess as pp
from cloudml.data.ingest import format_summary, ingest_flight
from cloudml.data.raw import bad_frames, constant_frames
from cloudml.data.shard import read_shard
from cloudml.data.timesync import span_gap_s
from cloudml.errors import DataError
from cloudml.fileio import sha256_file
from tests.support.rawfiles import flight_arrays, truncate, write_flight


def _ingest_cli(tmp_path, flight="30Oct24", *extra):
    out = tmp_path / "out" / f"{flight}.h5"
    rc = main(
        ["ingest", "--raw", str(tmp_path / "raw"), "--flight", flight, "--out", str(out), *extra]
    )
    return rc, out


def test_ingest_happy_path_shard_contents(tmp_path, capsys):
    a = flight_arrays(n_frames=30)
    irai_p, cpl_p, nav_p = write_flight(tmp_path / "raw", "30Oct24", a)
    rc, out = _ingest_cli(tmp_path, "30Oct24", "--set", "temporal_frames=3")
    assert rc == 0
    text = capsys.readouterr().out
    assert "28 samples" in text and "window_off_end=2" in text and str(out) in text
    s = read_shard(out)
    assert len(s) == 28 and s.temporal_frames == 3
    assert s.frame_shape == (14, 20)  # rows round(40*16/512)=1 .. round(480*16/512)=15
    # sample k is CPL profile k+1 matched to frame k+1: window k..k+2
    np.testing.assert_array_equal(s.frame_index, np.arange(28)[:, None] + np.arange(3))
    np.testing.assert_allclose(s.cbh_km, a["base"][1:29, 0], rtol=1e-6)
    np.testing.assert_allclose(s.sza_deg, a["sza"][1:29])
    np.testing.assert_allclose(s.dt_match_s, 0.1, atol=1e-5)
    assert s.raw_sha256 == {p.name: sha256_file(p) for p in (irai_p, cpl_p, nav_p)}
    assert s.config["temporal_frames"] == 3 and s.config["bin_factor"] == 1
    assert s.summary["dropped"]["window_off_end"] == 2
    assert np.isfinite(s.frame_table).all()
    z = s.frame_table.reshape(len(s.frame_table), -1)
    np.testing.assert_allclose(z.mean(axis=1), 0, atol=1e-5)  # zscore_normalize on
    np.testing.assert_allclose(z.std(axis=1), 1, rtol=1e-4)
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_each_used_frame_processed_once_and_local_binning(tmp_path, monkeypatch):
    calls = []
    real = pp.normalize_frame
    monkeypatch.setattr(pp, "normalize_frame", lambda *a: calls.append(1) or real(*a))
    a = flight_arrays(n_frames=20, rows=64, cols=80)
    base = a["base"].copy()
    base[10:, 0] = -9999.0  # only the first half is labelled: frames 15.. are never used
    write_flight(tmp_path / "raw", "30Oct24", {**a, "base": base})
    cfg = load_config("tuned", {"scale": "local"})
    s = ingest_flight(tmp_path / "raw", "30Oct24", tmp_path / "o.h5", cfg)
    shard = read_shard(tmp_path / "o.h5")
    assert s["n_samples"] == 8  # profiles 2..9 (T=5 needs 2 frames each side)
    assert s["n_frames"] == len(shard.frame_table) == 12  # frames 0..11, not 8 * 5 = 40
    assert len(calls) == 12
    assert s["bin_factor"] == 2 and shard.frame_shape == (27, 40)  # 64x80 -> 32x40, rows 3:30
    assert set(s["timings_s"]) >= {"read", "flat_field", "clahe", "write"}


def test_constant_frames_dropped_counted_and_warned(tmp_path, caplog):
    """A dead or stuck sensor writes frames of one value: bad frames, with a warning."""
    a = flight_arrays(n_frames=30)
    sig = a["signal"].copy()
    sig[15] = 1234  # one frame, every pixel the same
    irai, *_ = write_flight(tmp_path / "raw", "30Oct24", {**a, "signal": sig})
    with caplog.at_level("WARNING", logger="cloudml.data.ingest"):
        s = ingest_flight(tmp_path / "raw", "30Oct24", tmp_path / "o.h5", load_config("tuned"))
    assert s["n_constant_frames"] == 1 and s["n_bad_frames"] == 1
    assert s["dropped"]["bad_frame"] == 5  # T=5: the windows centred on frames 13..17
    assert f"{irai}: {layout.IRAI_SIGNAL}: 1 of 30 frames are a single value" in caplog.text
    assert "first at index 15" in caplog.text
    assert "1 bad, 1 of them constant" in format_summary({**s, "out_path": "o.h5"})


def test_span_gap_is_zero_when_spans_overlap_else_the_gap():
    assert span_gap_s(np.array([0.0, 10.0]), np.array([5.0, 20.0])) == 0.0
    assert span_gap_s(np.array([0.0, 10.0]), np.array([12.5, 20.0])) == 2.5
    assert span_gap_s(np.array([30.0, 40.0]), np.array([12.5, 20.0])) == 10.0


def test_time_ranges_that_do_not_overlap_name_both_files_and_spans(tmp_path):
    a = flight_arrays(n_frames=30)
    a["jday"] = a["jday"] + 2.0  # the CPL file two days later than the images
    irai, cpl, _ = write_flight(tmp_path / "raw", "30Oct24", a)
    with pytest.raises(DataError) as e:
        ingest_flight(tmp_path / "raw", "30Oct24", tmp_path / "o.h5", load_config("tuned"))
    msg = str(e.value)
    assert msg.startswith(f"{cpl} and {irai}: the instruments' times do not overlap")
    assert "CPL profiles 2024-11-01 18:00:00 .. 2024-11-01 18:00:29 UTC" in msg
    assert "IRAI frames 2024-10-30 18:00:00 .. 2024-10-30 18:00:29 UTC" in msg
    assert not (tmp_path / "o.h5").exists()


def test_no_matched_samples_reports_both_spans(tmp_path):
    a = flight_arrays(n_frames=30)
    a["base"][:] = layout.CPL_FILL  # overlapping times, but no usable profile
    write_flight(tmp_path / "raw", "30Oct24", a)
    with pytest.raises(DataError, match=r"no matched samples .*fill=30; CPL profiles 2024-10-30"):
        ingest_flight(tmp_path / "raw", "30Oct24", tmp_path / "o.h5", load_config("tuned"))


def test_nan_inf_and_fill_frames_dropped_and_counted(tmp_path):
    a = flight_arrays(n_frames=30)
    sig = a["signal"].astype(np.float32)
    sig[10, 0, 0] = np.nan
    sig[20, 3, 3] = np.inf
    write_flight(tmp_path / "raw", "30Oct24", {**a, "signal": sig})
    s = ingest_flight(tmp_path / "raw", "30Oct24", tmp_path / "o.h5", load_config("tuned"))
    # T=5: each bad frame spoils the 5 windows centred within 2 frames of it
    assert s["dropped"]["bad_frame"] == 10 and s["n_bad_frames"] == 2
    assert s["n_samples"] == 30 - 4 - 10
    frames_used = np.unique(read_shard(tmp_path / "o.h5").frame_index).size
    assert frames_used == s["n_frames"]


def _replace(path, name, data):
    with h5py.File(path, "a") as f:
        del f[name]
        if data is not None:
            f.create_dataset(name, data=data)


def _bad(kind, paths, a):
    """Break one raw file; return (file that must be named, text that must be named)."""
    irai, cpl, nav = paths
    n = len(a["frame_time"])
    if kind == "truncated_irai":
        truncate(irai)
        return irai, "HDF5"
    if kind == "truncated_cpl":
        truncate(cpl)
        return cpl, "HDF5"
    if kind == "truncated_nav":
        truncate(nav, 0.3)
        return nav, "HDF5"
    if kind == "missing_signal":
        _replace(irai, layout.IRAI_SIGNAL, None)
        return irai, layout.IRAI_SIGNAL
    if kind == "missing_cpl_base":
        _replace(cpl, layout.CPL_BASE, None)
        return cpl, layout.CPL_BASE
    if kind == "missing_nav_saa":
        _replace(nav, layout.NAV_SAA, None)
        return nav, layout.NAV_SAA
    if kind == "rank_signal":
        _replace(irai, layout.IRAI_SIGNAL, a["signal"][:, 0, :])
        return irai, layout.IRAI_SIGNAL
    if kind == "rank_cpl_surface":
        _replace(cpl, layout.CPL_LIDAR_SURF, np.zeros((n, 2)))
        return cpl, layout.CPL_LIDAR_SURF
    if kind == "rank_nav_sza":
        _replace(nav, layout.NAV_SZA, np.zeros((n, 1)))
        return nav, layout.NAV_SZA
    if kind == "time_vs_signal_length":
        _replace(irai, layout.IRAI_TIME, a["frame_time"][:-1])
        return irai, layout.IRAI_TIME
    if kind == "cpl_length_mismatch":
        _replace(cpl, layout.CPL_DEM_SURF, a["dem_surface_m"][:-3])
        return cpl, layout.CPL_DEM_SURF
    if kind == "nav_length":
        _replace(nav, layout.NAV_SAA, a["saa"][:-1])
        return nav, layout.NAV_SAA
    if kind == "non_monotonic_time":
        t = a["frame_time"].copy()
        t[5], t[6] = t[6], t[5]
        _replace(irai, layout.IRAI_TIME, t)
        return irai, "non-monotonic"
    if kind == "duplicated_time":
        t = a["frame_time"].copy()
        t[6] = t[5]
        _replace(irai, layout.IRAI_TIME, t)
        return irai, "duplicated"
    if kind == "nan_cpl_time":
        jd = a["jday"].copy()
        jd[4, 0] = np.nan
        _replace(cpl, layout.CPL_JDAY, jd)
        return cpl, layout.CPL_JDAY
    if kind == "all_fill_layers":
        _replace(cpl, layout.CPL_BASE, np.full_like(a["base"], layout.CPL_FILL))
        return cpl, "no matched samples.*fill=30"
    if kind == "cpl_name_without_year":
        cpl.rename(cpl.with_name("CPL_L2_V1-02_01kmLay_259006.hdf5"))
        return cpl.with_name("CPL_L2_V1-02_01kmLay_259006.hdf5"), "year"
    if kind == "missing_nav_file":
        nav.unlink()
        return nav, "missing raw file"
    raise AssertionError(kind)


BAD = [
    "truncated_irai", "truncated_cpl", "truncated_nav", "missing_signal", "missing_cpl_base",
    "missing_nav_saa", "rank_signal", "rank_cpl_surface", "rank_nav_sza",
    "time_vs_signal_length", "cpl_length_mismatch", "nav_length", "non_monotonic_time",
    "duplicated_time", "nan_cpl_time", "all_fill_layers", "cpl_name_without_year",
    "missing_nav_file",
]  # fmt: skip


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_fails_cleanly_through_cli(tmp_path, capsys, kind):
    a = flight_arrays(n_frames=30)
    paths = write_flight(tmp_path / "raw", "30Oct24", a)
    named_file, named_what = _bad(kind, paths, a)
    rc, out = _ingest_cli(tmp_path)
    err = capsys.readouterr().err
    assert rc != 0
    assert str(named_file) in err, err
    assert re.search(named_what, err), err
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no temp file either


def test_unknown_flight_fails_through_cli(tmp_path, capsys):
    write_flight(tmp_path / "raw", "30Oct24")
    rc, out = _ingest_cli(tmp_path, "31Dec99")
    err = capsys.readouterr().err
    assert rc != 0 and "unknown flight '31Dec99'" in err and "30Oct24" in err
    assert not out.exists()


def test_cli_scale_flag_overrides_config(tmp_path, capsys):
    write_flight(tmp_path / "raw", "30Oct24", flight_arrays(n_frames=12, rows=64, cols=80))
    rc, out = _ingest_cli(
        tmp_path, "30Oct24", "--scale", "local", "--set", "zscore_normalize=false"
    )
    assert rc == 0 and "scale local, bin 2" in capsys.readouterr().out
    s = read_shard(out)
    assert s.config["scale"] == "local" and s.config["zscore_normalize"] is False
    assert s.frame_shape == (27, 40)
    assert s.frame_table.min() >= 0.0 and s.frame_table.max() <= 1.0  # CLAHE range, no z-score


def test_synthetic_flight_end_to_end(tmp_path):
    synth = pytest.importorskip("cloudml.data.synth")
    synth.write_flight(tmp_path / "raw", "12Feb25", seed=0, frame_size=(32, 40))
    cfg = load_config("tuned", {"scale": "local"})
    s = ingest_flight(tmp_path / "raw", "12Feb25", tmp_path / "12Feb25.h5", cfg)
    shard = read_shard(tmp_path / "12Feb25.h5")
    assert s["n_samples"] == len(shard) > 50
    assert s["n_samples"] + sum(s["dropped"].values()) == s["n_profiles"]
    assert shard.cbh_km.min() >= 0.1 and shard.cbh_km.max() <= 2.0
    assert np.abs(shard.dt_match_s).max() <= 0.5
    assert (shard.saa_deg >= 0).all() and (shard.saa_deg < 360).all()
    assert np.all(np.diff(shard.frame_index, axis=1) == 1)  # consecutive frames per window


def test_constant_frames_are_finite_single_valued_frames_only():
    block = np.stack([np.full((2, 3), 7.0), np.full((2, 3), np.inf), np.full((2, 3), np.nan),
                      np.arange(6.0).reshape(2, 3)])  # fmt: skip
    assert constant_frames(block).tolist() == [True, False, False, False]
    assert bad_frames(block, fill=None).tolist() == [True, True, True, False]
