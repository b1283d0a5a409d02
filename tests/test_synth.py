"""The synthetic campaign: determinism, raw layout, geometry of the scene model, and honesty.

Honesty (docs/physics.md, 'The synthetic campaign'): the label must be recoverable only
through physics. On the default local campaign, a constant and a linear fit on global frame
statistics both fail on 12Feb25, while a simple shadow-geometry estimator (no learning beyond
a two-number calibration) succeeds.
"""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
from scipy import ndimage, signal

from cloudml import cli
from cloudml.data import layout, synth
from cloudml.data.timesync import cpl_julian_to_epoch, match_profiles
from cloudml.errors import ConfigError
from cloudml.flights import FLIGHT_NAMES, flight_paths, get_flight, year_from_cpl_filename

SMALL = (16, 20)


def _short(name: str, n_slots: int = 60) -> synth.FlightParams:
    return dataclasses.replace(synth.FLIGHT_PARAMS[name], n_slots=n_slots)


def _arrays(fl: synth.SynthFlight) -> dict[str, np.ndarray]:
    return {
        f.name: getattr(fl, f.name)
        for f in dataclasses.fields(fl)
        if isinstance(getattr(fl, f.name), np.ndarray)
    }


# --- determinism ------------------------------------------------------------------------------
def test_same_seed_identical_different_seed_differs():
    a = synth.synth_flight("12Feb25", seed=3, frame_size=SMALL, params=_short("12Feb25"))
    b = synth.synth_flight("12Feb25", seed=3, frame_size=SMALL, params=_short("12Feb25"))
    c = synth.synth_flight("12Feb25", seed=4, frame_size=SMALL, params=_short("12Feb25"))
    for key, arr in _arrays(a).items():
        np.testing.assert_array_equal(arr, _arrays(b)[key], err_msg=key)  # NaNs compare equal
    assert not np.array_equal(a.signal, c.signal)
    assert not np.array_equal(a.cpl_base_km, c.cpl_base_km)


def test_flight_does_not_depend_on_which_other_flights_are_generated(tmp_path):
    write_one = synth.write_campaign(tmp_path / "one", 1, SMALL, ["12Feb25"])
    write_two = synth.write_campaign(tmp_path / "two", 1, SMALL, ["10Feb25", "12Feb25"])
    one = h5py.File(flight_paths(tmp_path / "one", "12Feb25")[0])[layout.IRAI_SIGNAL][:]
    two = h5py.File(flight_paths(tmp_path / "two", "12Feb25")[0])[layout.IRAI_SIGNAL][:]
    np.testing.assert_array_equal(one, two)
    assert write_one["12Feb25"]["frames"] == write_two["12Feb25"]["frames"] == len(one)


# --- raw layout -------------------------------------------------------------------------------
def test_files_have_design_layout(tmp_path):
    summary = synth.write_campaign(tmp_path, seed=0, frame_size=SMALL, flights=["30Oct24"])
    irai, cpl, nav = flight_paths(tmp_path, "30Oct24")
    assert sorted(p.name for p in (tmp_path / "30Oct24").iterdir()) == sorted(
        get_flight("30Oct24").files
    )
    assert [p.name for p in tmp_path.iterdir()] == ["30Oct24"]  # no temp dirs left behind
    with h5py.File(irai) as f:
        sig, t = f[layout.IRAI_SIGNAL], f[layout.IRAI_TIME][:]
        n = summary["30Oct24"]["frames"]
        assert sig.shape == (n, *SMALL) and sig.dtype == np.uint16
        assert t.shape == (n,) and t.dtype == np.float64 and (np.diff(t) > 0).all()
        assert int(sig[:].max()) < 65535  # 65535 is the sensor fill value
    with h5py.File(cpl) as f:
        jd = f[layout.CPL_JDAY][:]
        m = jd.shape[0]
        assert jd.shape == (m, 3) and jd.dtype == np.float64
        assert f[layout.CPL_BASE].shape == (m, layout.CPL_MAX_LAYERS)
        assert f[layout.CPL_TOP].shape == (m, layout.CPL_MAX_LAYERS)
        assert f[layout.CPL_LIDAR_SURF].shape == f[layout.CPL_DEM_SURF].shape == (m,)
        base = f[layout.CPL_BASE][:, 0]
        assert (base == layout.CPL_FILL).any() and (base != layout.CPL_FILL).any()
        assert (f[layout.CPL_BASE][:, 1] != layout.CPL_FILL).any()  # occasional second layer
        assert (f[layout.CPL_DEM_SURF][:] > 0).any()  # land segments exist
    # CPL day-of-year with the file name's year lands on the IRAI clock, sub-second
    epoch = cpl_julian_to_epoch(jd[:, 0], year_from_cpl_filename(cpl))
    assert t[0] - 2 < epoch[0] < t[0] + 2 and abs(np.median(np.diff(epoch)) - 1.0) < 0.01
    assert np.any(np.abs(epoch - np.round(epoch)) > 0.05)  # not rounded to whole seconds
    with h5py.File(nav) as f:
        for key in (layout.NAV_SZA, layout.NAV_SAA):
            assert f[key].shape == (n,)


def test_rewrite_replaces_flight_atomically(tmp_path):
    synth.write_campaign(tmp_path, seed=0, frame_size=SMALL, flights=["12Feb25"])
    first = h5py.File(flight_paths(tmp_path, "12Feb25")[0])[layout.IRAI_SIGNAL][:]
    synth.write_campaign(tmp_path, seed=1, frame_size=SMALL, flights=["12Feb25"])
    second = h5py.File(flight_paths(tmp_path, "12Feb25")[0])[layout.IRAI_SIGNAL][:]
    assert not np.array_equal(first, second)
    assert [p.name for p in tmp_path.iterdir()] == ["12Feb25"]


def test_failed_write_leaves_no_partial_flight(tmp_path, monkeypatch):
    synth.write_campaign(tmp_path, seed=0, frame_size=SMALL, flights=["12Feb25"])
    before = h5py.File(flight_paths(tmp_path, "12Feb25")[0])[layout.IRAI_SIGNAL][:]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(layout, "write_nav", broken)  # the last of the three files
    with pytest.raises(OSError, match="disk full"):
        synth.write_campaign(tmp_path, seed=1, frame_size=SMALL, flights=["12Feb25", "10Feb25"])
    assert [p.name for p in tmp_path.iterdir()] == ["12Feb25"]  # no temp dir, no 10Feb25
    after = h5py.File(flight_paths(tmp_path, "12Feb25")[0])[layout.IRAI_SIGNAL][:]
    np.testing.assert_array_equal(before, after)  # the previous complete flight is kept


def test_full_size_frames(tmp_path):
    fl = synth.synth_flight("23Oct24", seed=0, frame_size=(512, 640), params=_short("23Oct24", 8))
    assert fl.signal.shape[1:] == (512, 640) and fl.signal.dtype == np.uint16
    assert fl.gsd_m == (25.0, 25.0)
    assert 0 < fl.signal.min() and fl.signal.max() < 65535


def test_cli_writes_requested_flights(tmp_path):
    rc = cli.main(
        ["synth", "--out", str(tmp_path), "--frame-size", "16x20", "--flights", "12Feb25"]
    )
    assert rc == 0
    assert all(p.is_file() for p in flight_paths(tmp_path, "12Feb25"))
    assert [p.name for p in tmp_path.iterdir()] == ["12Feb25"]


def test_cli_rejects_bad_input(tmp_path, capsys):
    assert cli.main(["synth", "--out", str(tmp_path), "--frame-size", "3x4"]) != 0
    assert "--frame-size" in capsys.readouterr().err
    assert cli.main(["synth", "--out", str(tmp_path), "--flights", "01Jan99"]) != 0
    assert "01Jan99" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_parse_frame_size():
    assert synth.parse_frame_size("local") == (26, 32)
    assert synth.parse_frame_size("full") == (512, 640)
    assert synth.parse_frame_size("64x80") == (64, 80)
    with pytest.raises(ConfigError, match="ROWSxCOLS"):
        synth.parse_frame_size("64by80")


# --- geometry of the scene model --------------------------------------------------------------
def test_shadow_falls_away_from_sun_by_height_tan_sza():
    tau = np.zeros((40, 40), np.float32)
    tau[20, 30] = 5.0  # one opaque cloud column
    heights = np.full((1, 40), 1.0)  # km, every ground row
    # sun at azimuth 90 deg (to the right of the heading): shadow 1 km * tan(45) to the left
    sh = synth.shadow_optical_depth(
        tau, heights, np.full(40, 45.0), np.full(40, 90.0), (100.0, 100.0)
    )
    assert np.unravel_index(np.argmax(sh), sh.shape) == (20, 20)
    # sun ahead (azimuth 0), SZA 60: shadow behind the cloud (larger row) by tan(60) km
    sh = synth.shadow_optical_depth(
        tau, heights, np.full(40, 60.0), np.full(40, 0.0), (100.0, 100.0)
    )
    r, c = np.unravel_index(np.argmax(sh), sh.shape)
    assert c == 30 and r in (20 + int(np.floor(10 * np.tan(np.radians(60)))), 20 + 18)


def test_parallax_pushes_elevated_layers_outward_from_nadir():
    ground = np.zeros((1, 64, 64), np.float32)
    ground[0, 32 + 4, 32] = 1.0  # 4 ground pixels ahead-of-nadir in row terms
    frame = (33, 33)  # odd: nadir is pixel (16, 16)
    surface = synth.view_frame(ground, 32.0, 32.0, 1.0, frame)[0]
    cloud = synth.view_frame(ground, 32.0, 32.0, 0.5, frame)[0]  # z = H/2: displacement doubles
    assert np.unravel_index(np.argmax(surface), frame) == (20, 16)
    assert np.unravel_index(np.argmax(cloud), frame) == (24, 16)


def test_cloud_fraction_follows_threshold():
    rng = np.random.default_rng(0)
    field = synth.fractal_field(rng, (256, 256), (400.0, 400.0), 5000.0, 4.0)
    assert abs(field.mean()) < 1e-5 and abs(field.std() - 1) < 1e-3
    tau = synth.cloud_optical_depth(field, np.full(256, 0.3), 10.0)
    assert 0.2 < (tau > 0).mean() < 0.4
    assert (tau >= 0).all()


# --- campaign-level honesty ---------------------------------------------------------------------
@dataclasses.dataclass
class _Samples:
    y: np.ndarray  # (n,) CPL base km
    frames: np.ndarray  # (n, R', C') calibrated, vignetting-corrected centre frames, K
    raw: np.ndarray  # (n, R', C') raw counts of the centre frame
    sza: np.ndarray  # (n,)
    saa: np.ndarray  # (n,)
    gsd: tuple[float, float]
    surface_k: float  # flight's clear-sea brightness temperature (p80 of frames)


def _smooth_flat(mean_frame: np.ndarray) -> np.ndarray:
    """Quadratic surface fitted to the flight-mean frame: the analyst's vignetting model."""
    r, c = np.meshgrid(*(np.linspace(-1, 1, n) for n in mean_frame.shape), indexing="ij")
    a = np.stack([np.ones_like(r), r, c, r * r, c * c, r * c], -1).reshape(-1, 6)
    coef = np.linalg.lstsq(a, mean_frame.ravel(), rcond=None)[0]
    fit = (a @ coef).reshape(mean_frame.shape)
    return fit / fit.mean()


def _samples(name: str) -> _Samples:
    fl = synth.synth_flight(name, seed=0)
    p = synth.FLIGHT_PARAMS[name]
    year = year_from_cpl_filename(get_flight(name).cpl_file)
    m = match_profiles(
        cpl_julian_to_epoch(fl.cpl_jday[:, 0], year),
        fl.cpl_base_km[:, 0],
        fl.lidar_surface_m / 1000.0,  # km
        fl.dem_surface_m,
        fl.time_utc,
        (0.1, 2.0),
        5,
    )
    rows = fl.signal.shape[1]
    a, b = round(40 * rows / 512), round(480 * rows / 512)  # swath_slice, proportional
    bt = (fl.signal.astype(np.float32) - p.offset) / p.gain  # L1B calibration, K
    bt /= _smooth_flat(bt.mean(0))
    sza = np.where(np.isfinite(fl.sza_deg), fl.sza_deg, np.nanmean(fl.sza_deg))
    saa = np.where(np.isfinite(fl.saa_deg), fl.saa_deg, 0.0)
    k = m.frame_idx
    return _Samples(
        y=fl.cpl_base_km[m.profile_idx, 0].astype(np.float64),
        frames=bt[k, a:b],
        raw=fl.signal[k, a:b].astype(np.float64),
        sza=sza[k],
        saa=saa[k],
        gsd=fl.gsd_m,
        surface_k=float(np.percentile(bt, 80)),
    )


@pytest.fixture(scope="module")
def campaign() -> dict[str, _Samples]:
    return {name: _samples(name) for name in FLIGHT_NAMES}


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1.0 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def _split(campaign):
    train = [campaign[n] for n in FLIGHT_NAMES if n != "12Feb25"]
    return train, campaign["12Feb25"]


def _global_stats(raw: np.ndarray) -> np.ndarray:
    """(n, 9) mean, std, min, max, p5/25/50/75/95 of each (n, R, C) frame."""
    flat = raw.reshape(len(raw), -1)
    pct = np.percentile(flat, [5, 25, 50, 75, 95], axis=1).T
    return np.column_stack([flat.mean(1), flat.std(1), flat.min(1), flat.max(1), pct])


def shadow_height_km(frame: np.ndarray, sza: float, saa: float, gsd: tuple[float, float]) -> float:
    """Cloud height from the cloud-to-shadow displacement along the known anti-sun direction.

    Cross-correlates the down-sun edge of the cloud mask with the warming edge of the clear
    sea (shadow -> sunlit) for displacements d along the shadow direction; h = d GSD / tan(SZA).
    """
    dx = frame - np.percentile(frame, 80)  # K below the clear sea
    cloud = (dx < -3.5).astype(np.float64)
    clear = dx > -1.8
    phi = np.radians(saa)
    ur, uc = np.cos(phi) / gsd[0], -np.sin(phi) / gsd[1]  # shadow direction, px per metre
    step = 1.0 / np.hypot(ur, uc)  # metres per unit pixel step
    er, ec = ur * step, uc * step
    rr, cc = np.meshgrid(*(np.arange(n, dtype=float) for n in frame.shape), indexing="ij")

    def ddir(img: np.ndarray) -> np.ndarray:  # derivative along the shadow direction
        fwd = ndimage.map_coordinates(img, [rr + er / 2, cc + ec / 2], order=1)
        back = ndimage.map_coordinates(img, [rr - er / 2, cc - ec / 2], order=1)
        return fwd - back

    ok_s = (
        ndimage.map_coordinates(clear.astype(float), [rr + er / 2, cc + ec / 2], order=1) > 0.99
    ) & (ndimage.map_coordinates(clear.astype(float), [rr - er / 2, cc - ec / 2], order=1) > 0.99)
    g_sea = np.where(ok_s, ddir(dx), 0.0)  # + where the sea warms going down-sun
    g_cloud = ddir(cloud)  # - at the cloud's down-sun edge
    # xc[D] = sum_q g_sea(q) g_cloud(q - D); normalised by the overlap count
    xc = signal.correlate(g_sea, g_cloud, mode="full", method="fft")
    nc = signal.correlate(ok_s.astype(float), np.ones_like(g_cloud), mode="full", method="fft")
    r0, c0 = frame.shape[0] - 1, frame.shape[1] - 1  # zero lag
    d_max = 2.8e3 * np.tan(np.radians(sza)) / step  # 2.8 km cloud at most
    ds = np.arange(0.5, d_max, 0.25)
    at = [r0 + ds * er, c0 + ds * ec]
    score = ndimage.map_coordinates(xc, at, order=1) / np.maximum(
        ndimage.map_coordinates(nc, at, order=1), 1.0
    )
    score = ndimage.gaussian_filter1d(score, 1.0)
    i = int(np.argmin(score))
    if score[i] >= 0:
        return np.nan
    return ds[i] * step / np.tan(np.radians(sza)) / 1000.0


def _physics_estimates(s: _Samples) -> np.ndarray:
    return np.array(
        [shadow_height_km(f, z, a, s.gsd) for f, z, a in zip(s.frames, s.sza, s.saa, strict=True)]
    )


def test_constant_predictor_scores_no_skill_on_validation_flight(campaign):
    train, val = _split(campaign)
    mean = np.concatenate([s.y for s in train]).mean()
    r2 = _r2(val.y, np.full_like(val.y, mean))
    print(f"constant (training mean {mean:.3f} km): R2(12Feb25) = {r2:.3f}")
    assert r2 <= 0.0


def test_global_frame_statistics_do_not_carry_the_label(campaign):
    train, val = _split(campaign)
    x = np.vstack([_global_stats(s.raw) for s in train])
    y = np.concatenate([s.y for s in train])
    design = np.column_stack([np.ones(len(x)), x])
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    r2 = _r2(val.y, np.column_stack([np.ones(len(val.y)), _global_stats(val.raw)]) @ coef)
    print(f"linear fit on global frame statistics: R2(12Feb25) = {r2:.3f}")
    assert r2 < 0.3


def test_shadow_geometry_recovers_the_label(campaign):
    train, val = _split(campaign)
    est = {id(s): _physics_estimates(s) for s in (*train, val)}
    h = np.concatenate([est[id(s)] for s in train])
    y = np.concatenate([s.y for s in train])
    ok = np.isfinite(h)
    assert ok.mean() > 0.9
    a, b = np.linalg.lstsq(np.column_stack([np.ones(ok.sum()), h[ok]]), y[ok], rcond=None)[0]
    hv = est[id(val)]
    pred = np.where(np.isfinite(hv), a + b * np.nan_to_num(hv), y.mean())
    r2 = _r2(val.y, pred)
    x = np.vstack([_global_stats(s.raw) for s in train])
    coef = np.linalg.lstsq(np.column_stack([np.ones(len(x)), x]), y, rcond=None)[0]
    r2_lin = _r2(val.y, np.column_stack([np.ones(len(val.y)), _global_stats(val.raw)]) @ coef)
    print(f"shadow-geometry estimator: R2(12Feb25) = {r2:.3f} (h = {a:.2f} + {b:.2f} h_shadow)")
    assert b > 0.3  # the shadow displacement grows with the lidar height
    assert r2 > 0.4 and r2 > r2_lin + 0.2


def test_campaigns_differ(campaign):
    oct_ = [campaign[n] for n in FLIGHT_NAMES if n.endswith("24")]
    feb = [campaign[n] for n in FLIGHT_NAMES if n.endswith("25")]
    assert min(s.surface_k for s in oct_) > max(s.surface_k for s in feb) + 4.0  # warmer sea
    raw_means = [s.raw.mean() for s in campaign.values()]
    assert np.ptp(raw_means) > 1000  # per-flight calibrations differ in counts
    means = {n: s.y.mean() for n, s in campaign.items()}
    assert max(means.values()) - min(means.values()) > 0.3  # CBH regimes differ
    assert abs(campaign["23Oct24"].y.mean() - campaign["18Feb25"].y.mean()) > 0.4
    sza = {n: s.sza.mean() for n, s in campaign.items()}
    assert max(sza.values()) - min(sza.values()) > 5.0


def test_sample_counts_resemble_the_seed(campaign):
    n = {name: len(s.y) for name, s in campaign.items()}
    assert 580 <= n["30Oct24"] <= 680, n
    assert 130 <= n["12Feb25"] <= 170, n
    for name in ("10Feb25", "04Nov24", "23Oct24", "18Feb25"):  # not in the seed's document
        assert 120 <= n[name] <= 200, n
