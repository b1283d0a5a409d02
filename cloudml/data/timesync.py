"""CPL profile times, the label filter and nearest-frame matching. Pure, vectorised.
The rules: docs/physics.md, 'Raw flight files' (time) and 'Label rules'.

Every CPL profile ends up either kept (one sample) or dropped for exactly one reason, the
first that applies in REASONS order, so the counts add up to the number of profiles.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field

import numpy as np

REASONS = (
    "fill",  # layer-0 base is the -9999 fill or not finite
    "land",  # |Lidar_Surface_Altitude| > 0.9 km (stored in m, read as km) or DEM_Surface_Altitude != 0
    "out_of_range",  # base outside cbh_range_km (inclusive)
    "no_frame",  # no image frame within max_dt_s
    "duplicate_frame",  # another usable profile matched the same frame more closely
    "window_off_end",  # the temporal window runs off either end of the flight
    "bad_frame",  # a frame of the window holds NaN/Inf or the sensor fill
)
CPL_FILL = -9999.0
LAND_SURFACE_KM = 0.9
MAX_DT_S = 0.5
DAY_S = 86400.0


def cpl_julian_to_epoch(jday: np.ndarray, year: int) -> np.ndarray:
    """(M,) decimal day of year (1.0 = 1 Jan 00:00 UTC of `year`) -> (M,) epoch seconds.

    Kept as float64 seconds throughout (never rounded, never split into h:m:s, so a time
    like 23:59:59.9996 stays just before midnight instead of becoming an invalid 60 s).
    A value that drops by more than 0.2 from one profile to the next means the flight
    crossed midnight UTC without the day number advancing: one day is added from there on;
    a drop of more than half a year is a 31 Dec -> 1 Jan wrap and adds the year's length.
    """
    jday = np.asarray(jday, dtype=np.float64)
    year_len = 366.0 if calendar.isleap(year) else 365.0
    drop = -np.diff(jday)  # (M-1,) positive where the value falls
    step = np.where(drop > year_len / 2, year_len, np.where(drop > 0.2, 1.0, 0.0))
    days_added = np.concatenate([[0.0], np.cumsum(step)])  # (M,)
    whole = np.floor(jday)
    frac = jday - whole  # sub-day part kept separately: no precision lost to the large sum
    year0 = float(calendar.timegm((year, 1, 1, 0, 0, 0)))
    return year0 + (whole - 1.0 + days_added) * DAY_S + frac * DAY_S


def window_offsets(temporal_frames: int) -> np.ndarray:
    """(T,) frame offsets of a window around its centre frame c.

    Odd T is symmetric (T=5: c-2..c+2); even T has one more frame before than after
    (T=4: c-2..c+1).
    """
    return np.arange(temporal_frames) - temporal_frames // 2


def label_reasons(
    base_km: np.ndarray,
    lidar_surface_km: np.ndarray,
    dem_surface_m: np.ndarray,
    cbh_range_km: tuple[float, float],
) -> np.ndarray:
    """(M,) int8 index into REASONS of the first label rule a profile fails, -1 when usable."""
    base = np.asarray(base_km, np.float64)
    reason = np.full(base.shape, -1, np.int8)
    fill = ~np.isfinite(base) | (base == CPL_FILL)
    surf_km = np.asarray(lidar_surface_km, np.float64)
    with np.errstate(invalid="ignore"):  # an unknown (NaN) surface counts as land
        land = ~(np.abs(surf_km) <= LAND_SURFACE_KM) | (np.asarray(dem_surface_m, np.float64) != 0)
    lo, hi = cbh_range_km
    with np.errstate(invalid="ignore"):
        out = (base < lo) | (base > hi)
    # later assignments must not overwrite earlier reasons: assign in reverse order
    for code, mask in ((2, out), (1, land), (0, fill)):
        reason[mask] = code
    return reason


def nearest_frame(profile_time: np.ndarray, frame_time: np.ndarray) -> np.ndarray:
    """(M,) index of the frame nearest in time to each profile (ties: the earlier frame)."""
    n = len(frame_time)
    right = np.clip(np.searchsorted(frame_time, profile_time), 0, n - 1)  # first frame >= t
    left = np.clip(right - 1, 0, n - 1)
    use_left = np.abs(profile_time - frame_time[left]) <= np.abs(frame_time[right] - profile_time)
    return np.where(use_left, left, right)


@dataclass
class MatchResult:
    profile_idx: np.ndarray  # (n,) kept CPL profile indices, time order
    frame_idx: np.ndarray  # (n,) matched (centre) frame per kept profile
    window: np.ndarray  # (n, T) frame indices of each sample's window
    dt_s: np.ndarray  # (n,) profile time - matched frame time
    dropped: dict[str, int] = field(default_factory=dict)  # every reason, in REASONS order
    dt_abs_s: dict[str, float | None] = field(default_factory=dict)  # p50, p95, max of |dt|
    reason: np.ndarray | None = None  # (M,) int8 per profile, -1 = kept

    @property
    def n_samples(self) -> int:
        return int(len(self.profile_idx))


def match_profiles(
    profile_time: np.ndarray,
    base_km: np.ndarray,
    lidar_surface_km: np.ndarray,
    dem_surface_m: np.ndarray,
    frame_time: np.ndarray,
    cbh_range_km: tuple[float, float],
    temporal_frames: int,
    bad_frame: np.ndarray | None = None,
    max_dt_s: float = MAX_DT_S,
) -> MatchResult:
    """Filter CPL profiles and match each usable one to its nearest image frame.

    `frame_time` (N,) must be strictly increasing. When two usable profiles match the same
    frame, the one nearer in time to it is kept (ties: the earlier profile) and the other is
    dropped as "duplicate_frame". Windows are `window_offsets(T)` around the matched frame;
    a window running off either end is dropped, never wrapped or padded.
    """
    t = np.asarray(profile_time, np.float64)  # (M,)
    ft = np.asarray(frame_time, np.float64)  # (N,)
    n_frames = len(ft)
    reason = label_reasons(base_km, lidar_surface_km, dem_surface_m, cbh_range_km)
    frame = nearest_frame(t, ft)  # (M,)
    dt = t - ft[frame]  # (M,)

    ok = reason < 0
    reason[ok & (np.abs(dt) > max_dt_s)] = 3  # no_frame
    ok = reason < 0

    # duplicate_frame: order candidates by (frame, |dt|, profile index); keep each frame's first
    cand = np.flatnonzero(ok)
    order = np.lexsort((cand, np.abs(dt[cand]), frame[cand]))
    cand = cand[order]
    first = np.ones(len(cand), bool)
    first[1:] = frame[cand][1:] != frame[cand][:-1]
    reason[cand[~first]] = 4

    offs = window_offsets(temporal_frames)  # (T,)
    ok = reason < 0
    off_end = (frame + offs[0] < 0) | (frame + offs[-1] > n_frames - 1)
    reason[ok & off_end] = 5  # window_off_end

    ok = reason < 0
    win_all = np.clip(
        frame[:, None] + offs[None, :], 0, n_frames - 1
    )  # (M, T), clip only for lookup
    if bad_frame is not None:
        bad = np.asarray(bad_frame, bool)
        reason[ok & bad[win_all].any(axis=1)] = 6  # bad_frame

    keep = np.flatnonzero(reason < 0)
    counts = np.bincount(reason[reason >= 0], minlength=len(REASONS))
    dt_keep = dt[keep]
    return MatchResult(
        profile_idx=keep,
        frame_idx=frame[keep],
        window=win_all[keep],
        dt_s=dt_keep,
        dropped={r: int(c) for r, c in zip(REASONS, counts, strict=True)},
        dt_abs_s=dt_stats(dt_keep),
        reason=reason,
    )


def span_gap_s(a: np.ndarray, b: np.ndarray) -> float:
    """Seconds between the time spans [min, max] of `a` and `b`: 0 when they overlap, else
    the gap between the end of the earlier and the start of the later."""
    return float(max(0.0, np.min(b) - np.max(a), np.min(a) - np.max(b)))


def dt_stats(dt: np.ndarray) -> dict[str, float | None]:
    """p50 / p95 / max of |dt| in seconds (None when there are no samples)."""
    if len(dt) == 0:
        return {"p50": None, "p95": None, "max": None}
    a = np.abs(dt)
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
    }
