import calendar
import datetime

import numpy as np
import pytest

from cloudml.data.timesync import (
    REASONS,
    cpl_julian_to_epoch,
    match_profiles,
    nearest_frame,
    window_offsets,
)
from cloudml.errors import DataError
from cloudml.flights import year_from_cpl_filename


def _epoch(y, mo, d, h=0, mi=0, s=0):
    return float(calendar.timegm((y, mo, d, h, mi, s)))


def test_julian_day_uses_year_from_file_name_only():
    name = "/data/v1.2/CPL_L2_V1-02_01kmLay_259006_30oct24.hdf5"  # '.' in a folder
    year = year_from_cpl_filename(name)
    assert year == 2024
    # 30 Oct 2024 is day 304 of a leap year; 18:30:15.25 UTC
    jd = 304 + (18 * 3600 + 30 * 60 + 15.25) / 86400
    t = cpl_julian_to_epoch(np.array([jd]), year)
    assert t[0] == pytest.approx(_epoch(2024, 10, 30, 18, 30, 15) + 0.25, abs=1e-5)
    with pytest.raises(DataError, match="CPL_L2_V1-02_01kmLay_259006.hdf5"):
        year_from_cpl_filename("/x_30oct24/CPL_L2_V1-02_01kmLay_259006.hdf5")


def test_sub_second_precision_is_kept():
    base = 304 + 18 * 3600 / 86400
    offs = np.array([0.0, 0.13, 0.26, 0.61, 0.99])
    t = cpl_julian_to_epoch(base + offs / 86400, 2024)
    np.testing.assert_allclose(t - t[0], offs, atol=2e-5)
    assert len(np.unique(np.round(t - t[0], 3))) == 5  # nothing rounded to whole seconds


def test_sixty_second_edge_stays_before_midnight():
    jd = 304 + (86400 - 0.0004) / 86400  # 23:59:59.9996 on day 304
    t = cpl_julian_to_epoch(np.array([jd]), 2024)[0]
    midnight = _epoch(2024, 10, 31)
    assert midnight - 0.0005 < t < midnight
    stamp = datetime.datetime.fromtimestamp(t, datetime.UTC)
    assert (stamp.day, stamp.hour, stamp.minute, stamp.second) == (30, 23, 59, 59)
    assert stamp.microsecond >= 999_500


def test_midnight_roll_over_adds_a_day():
    # the day number does not advance, the fraction wraps from ~0.9999 to ~0.0001
    jd = np.array([304.9998, 304.9999, 304.0000 + 0.5 / 86400, 304.0001])
    t = cpl_julian_to_epoch(jd, 2024)
    assert np.all(np.diff(t) > 0)
    assert t[2] == pytest.approx(_epoch(2024, 10, 31) + 0.5, abs=1e-4)
    # a properly advancing day number is left alone
    jd2 = np.array([304.9999, 305.0001])
    np.testing.assert_allclose(np.diff(cpl_julian_to_epoch(jd2, 2024)), 0.0002 * 86400, rtol=1e-6)


def test_year_roll_over():
    jd = np.array([366.9999, 1.0001])  # 31 Dec 2024 (leap year) -> 1 Jan 2025
    t = cpl_julian_to_epoch(jd, 2024)
    assert t[1] == pytest.approx(_epoch(2025, 1, 1) + 0.0001 * 86400, abs=1e-4)
    assert 0 < t[1] - t[0] < 20


def test_window_offsets_even_and_odd():
    assert window_offsets(5).tolist() == [-2, -1, 0, 1, 2]
    assert window_offsets(4).tolist() == [-2, -1, 0, 1]
    assert window_offsets(1).tolist() == [0]


def test_nearest_frame_edges():
    ft = np.array([10.0, 11.0, 12.0])
    got = nearest_frame(np.array([5.0, 10.4, 10.5, 10.6, 12.0, 99.0]), ft)
    assert got.tolist() == [0, 0, 0, 1, 2, 2]


def _case():
    """12 frames at 1 Hz; 14 profiles, each built to fail one known rule (or pass)."""
    ft = 100.0 + np.arange(12)
    rows = [
        # (time, base_km, lidar_surface_km, dem_m, expected reason or None)
        (99.4, 1.0, 0, 0, "no_frame"),  # 0.6 s before the first frame
        (100.0, 1.0, 0, 0, "window_off_end"),  # frame 0: would read frame -2
        (102.1, -9999.0, 0, 0, "fill"),
        (102.9, np.nan, 0, 0, "fill"),
        (103.0, 1.0, 0.95, 0, "land"),  # surface 0.95 km
        (104.0, 1.0, 0, 5.0, "land"),  # DEM != 0
        (104.2, 2.5, 0, 0, "out_of_range"),
        (105.0, 0.05, 0, 0, "out_of_range"),
        (105.7, 2.0, 0, 0, "duplicate_frame"),  # frame 6 at dt -0.3: loses to the next
        (106.2, 2.0, 0, 0, None),  # frame 6 at dt +0.2; 2.0 km is inside (inclusive)
        (108.0, 0.1, -0.899, 0, None),  # 0.899 km surface is ocean; 0.1 km inclusive
        (109.0, 1.0, 0, 0, "bad_frame"),  # window 7..11 holds bad frame 11
        (111.0, 1.0, 0, 0, "window_off_end"),  # last frame: would read frame 13
        (150.0, 1.0, 0, 0, "no_frame"),
    ]
    t, b, s, d, want = map(list, zip(*rows, strict=True))
    bad = np.zeros(12, bool)
    bad[11] = True
    return ft, np.array(t), np.array(b), np.array(s, float), np.array(d, float), bad, want


def test_match_counts_by_reason_known_answers():
    ft, t, b, s, d, bad, want = _case()
    r = match_profiles(t, b, s, d, ft, (0.1, 2.0), 5, bad_frame=bad)
    got = [None if k < 0 else REASONS[k] for k in r.reason]
    assert got == want
    assert r.dropped == {k: want.count(k) for k in REASONS}
    assert sum(r.dropped.values()) + r.n_samples == len(t)
    assert r.profile_idx.tolist() == [9, 10]
    assert r.frame_idx.tolist() == [6, 8]
    assert r.window.tolist() == [[4, 5, 6, 7, 8], [6, 7, 8, 9, 10]]
    np.testing.assert_allclose(r.dt_s, [0.2, 0.0], atol=1e-9)
    assert r.dt_abs_s["max"] == pytest.approx(0.2)
    assert r.dt_abs_s["p50"] == pytest.approx(0.1)


def test_first_and_last_frame_windows_are_dropped_not_wrapped():
    ft = 100.0 + np.arange(6)
    t = ft.copy()  # one profile per frame
    ones = np.ones(6)
    zeros = np.zeros(6)
    r = match_profiles(t, ones, zeros, zeros, ft, (0.1, 2.0), 4)
    # T=4 -> frames c-2..c+1: centres 2..4 fit, 0, 1 and 5 run off an end
    assert r.frame_idx.tolist() == [2, 3, 4]
    assert r.window.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]]
    assert r.dropped["window_off_end"] == 3
    assert r.window.min() >= 0 and r.window.max() <= 5


def test_nothing_usable_gives_empty_result():
    ft = 100.0 + np.arange(6)
    fill = np.full(6, -9999.0)
    r = match_profiles(ft, fill, np.zeros(6), np.zeros(6), ft, (0.1, 2.0), 3)
    assert r.n_samples == 0 and r.window.shape == (0, 3)
    assert r.dropped["fill"] == 6
    assert r.dt_abs_s == {"p50": None, "p95": None, "max": None}
