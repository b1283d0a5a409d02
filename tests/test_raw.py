import h5py
import numpy as np
import pytest

from cloudml.data import layout, raw
from cloudml.errors import DataError
from tests.support.rawfiles import T0, flight_arrays, write_flight


def test_readers_happy_path(tmp_path):
    a = flight_arrays(n_frames=12)
    irai_p, cpl_p, nav_p = write_flight(tmp_path, "30Oct24", a)
    irai = raw.read_irai(irai_p)
    assert irai.signal.shape == (12, 16, 20) and irai.signal.dtype == np.float32
    np.testing.assert_array_equal(irai.signal, a["signal"].astype(np.float32))
    np.testing.assert_array_equal(irai.time_utc, a["frame_time"])
    assert not irai.bad.any()
    cpl = raw.read_cpl(cpl_p)
    assert cpl.year == 2024 and cpl.n_layers == layout.CPL_MAX_LAYERS
    np.testing.assert_allclose(cpl.time_utc, a["frame_time"] + 0.1, atol=1e-5)
    np.testing.assert_allclose(cpl.base_km, a["base"][:, 0], rtol=1e-6)
    np.testing.assert_allclose(cpl.lidar_surface_km * 1000, a["lidar_surface_m"], rtol=1e-6)
    nav = raw.read_nav(nav_p, 12)
    np.testing.assert_allclose(nav.sza_deg, a["sza"])
    np.testing.assert_allclose(nav.saa_deg, a["saa"])


def test_bad_frames_flagged_not_fatal(tmp_path):
    a = flight_arrays(n_frames=6)
    sig = a["signal"].copy()
    sig[2, 3, 4] = np.iinfo(np.uint16).max  # sensor fill for uint16 counts
    irai_p, *_ = write_flight(tmp_path, "30Oct24", {**a, "signal": sig})
    assert raw.read_irai(irai_p).bad.tolist() == [False, False, True, False, False, False]
    f = a["signal"].astype(np.float32)
    f[1, 0, 0], f[4, 5, 5] = np.nan, np.inf
    layout.write_irai(irai_p, f, a["frame_time"])
    assert np.flatnonzero(raw.read_irai(irai_p).bad).tolist() == [1, 4]


def test_nav_cleaning():
    sza = np.array([30.0, np.nan, 50.0, np.inf])
    saa = np.array([370.0, np.nan, -10.0, 359.5])
    nav = raw.clean_nav(sza, saa)
    np.testing.assert_allclose(nav.sza_deg, [30, 40, 50, 40])
    np.testing.assert_allclose(nav.saa_deg, [10, 0, 350, 359.5])
    assert (nav.n_sza_filled, nav.n_saa_filled) == (2, 1)
    with pytest.raises(DataError, match="nav/solarZenith"):
        raw.clean_nav(np.full(3, np.nan), np.zeros(3))


@pytest.mark.parametrize(
    "times, word",
    [
        (T0 + np.array([0.0, 1, 3, 2, 4, 5]), "non-monotonic"),
        (T0 + np.array([0.0, 1, 2, 2, 4, 5]), "duplicated"),
        (T0 + np.array([0.0, 1, np.nan, 3, 4, 5]), "NaN/Inf"),
    ],
)
def test_irai_time_errors_name_file_and_dataset(tmp_path, times, word):
    a = flight_arrays(n_frames=6)
    irai_p, *_ = write_flight(tmp_path, "30Oct24", {**a, "frame_time": times})
    with pytest.raises(DataError, match=word) as e:
        raw.check_irai(irai_p)
    assert irai_p.name in str(e.value) and layout.IRAI_TIME in str(e.value)


def test_cpl_time_nan_and_missing_column(tmp_path):
    a = flight_arrays(n_frames=6)
    jd = a["jday"].copy()
    jd[3, 0] = np.inf
    _, cpl_p, _ = write_flight(tmp_path, "30Oct24", {**a, "jday": jd})
    with pytest.raises(DataError, match=r"Profile_Decimal_Julian_Day\[:, 0\] holds 1 NaN/Inf"):
        raw.read_cpl(cpl_p)
    with h5py.File(cpl_p, "a") as f:
        del f[layout.CPL_BASE]
        f.create_dataset(layout.CPL_BASE, data=np.zeros((6, 0), np.float32))
        del f[layout.CPL_JDAY]
        f.create_dataset(layout.CPL_JDAY, data=a["jday"])
    with pytest.raises(DataError, match="Layer_Base_Altitude has no layer columns"):
        raw.read_cpl(cpl_p)


def test_non_numeric_dataset_rejected(tmp_path):
    a = flight_arrays(n_frames=6)
    _, _, nav_p = write_flight(tmp_path, "30Oct24", a)
    with h5py.File(nav_p, "a") as f:
        del f[layout.NAV_SAA]
        f.create_dataset(layout.NAV_SAA, data=np.array([b"x"] * 6))
    with pytest.raises(DataError, match="nav/sunAzGrd has dtype"):
        raw.read_nav(nav_p, 6)
