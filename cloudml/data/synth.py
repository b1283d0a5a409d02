"""Physical scene simulator: the six campaign flights in the instruments' raw layout (DESIGN §4).

The label is never painted into pixels. A ground scene (ocean temperature field, broken
boundary-layer cloud with optical depth, cloud base/top heights that drift along the track)
is built in ground coordinates; each IRAI frame is the view of that scene from the ER-2 at
20 km (parallax: elevated cloud is displaced outward from nadir by z/(H-z)); cloud shadows
fall on the sea displaced by z*tan(SZA) away from the sun and cool it slightly; a sensor
model (vignetting, column striping, gain drift, noise, linear calibration) turns brightness
temperature into uint16 counts. The CPL is a nadir lidar flying over the same scene: it
reports the base of the cloud under the aircraft (with range noise), fill when clear.

Image orientation: row 0 is forward (the aircraft heading), rows run along-track, columns
cross-track. `nav/sunAzGrd` is written as the solar azimuth clockwise from the heading, so
the scalar the model sees fixes the shadow direction in the image (a column flip maps it to
360 - SAA, as the augmentation assumes).

    out = write_campaign("data/raw", seed=0)            # six flights, local 26x32 frames
    fl = synth_flight("12Feb25", seed=0, frame_size=(26, 32))   # arrays, no I/O
"""

from __future__ import annotations

import argparse
import calendar
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from cloudml.data import layout
from cloudml.errors import ConfigError
from cloudml.flights import FLIGHT_NAMES, get_flight

log = logging.getLogger(__name__)

# --- platform and frame geometry ------------------------------------------------------------
ALTITUDE_M = 20_000.0  # ER-2 cruise
SPEED_MPS = 200.0  # ground speed
FRAME_DT_S = 1.0  # IRAI frame period
FULL_GSD_M = 25.0  # at 512 x 640
FOOTPRINT_M = (layout.FULL_ROWS * FULL_GSD_M, layout.FULL_COLS * FULL_GSD_M)  # 12.8 x 16 km
# 20x coarser than a full frame: ~490 x 500 m GSD. A CPU trains on it in minutes; 400 m
# (32x40) costs 1.5x the arithmetic per sample, and the R² differences measured between
# frame sizes were within the spread over training seeds (docs/physics.md)
LOCAL_FRAME = (26, 32)
MAX_SHADOW_M = 9_000.0  # scene margin around the footprint for shadows cast from outside
TURN_S = 30  # no frames while the aircraft turns between straight legs


@dataclass(frozen=True)
class FlightParams:
    """One flight's scene, geometry, instrument and sampling parameters."""

    n_slots: int  # frame slots (1 s each); a few are dropped frames
    start_utc: str  # "HH:MM:SS" take-off of the straight leg, same UTC day throughout
    sst_k: float  # flight-mean sea surface brightness temperature
    base_km: tuple[float, float]  # cloud-base regime: mean, sd of the along-track series
    base_corr_km: float  # along-track correlation length of the base series
    thick_km: tuple[float, float]  # cloud thickness: mean, sd (slowly varying)
    lapse_k_per_km: float  # cloud-top temperature decrease with height
    air_sea_dt_k: float  # sea skin warmer than the near-surface air (cold-air outbreaks: large)
    cloud_frac: tuple[float, float]  # range the along-track cloud fraction wanders in
    tau_per_sd: float  # optical depth per unit excess of the cloud field over threshold
    sza_deg: tuple[float, float]  # solar zenith at start, end of the leg
    legs_saa_deg: tuple[float, ...]  # solar azimuth from the heading on each straight leg
    heading_deg: float  # true heading of the first leg (documentation)
    shadow_k: float  # surface cooling under a fully opaque cloud shadow
    gain: float  # counts per K
    offset: float  # counts at 0 K
    vignetting: float  # fractional signal loss at the frame corner
    land_segments: tuple[tuple[float, float, float], ...] = ()  # (start frac, len s, DEM m)
    second_layer_prob: float = 0.04  # per-profile chance of an upper (sub-visible) layer
    frame_drop: float = 0.03  # chance a frame slot starts a dropout (1-3 frames)
    cpl_jitter_s: float = 0.12  # sd of the CPL clock against the IRAI clock
    saa_drift_deg: float = 3.0  # the sun's azimuth change over the flight


_OCT = dict(sst_k=296.0, lapse_k_per_km=6.2, air_sea_dt_k=1.0)
_FEB = dict(sst_k=287.5, lapse_k_per_km=6.8, air_sea_dt_k=3.5)
FLIGHT_PARAMS: dict[str, FlightParams] = {
    "10Feb25": FlightParams(
        n_slots=607,
        start_utc="19:02:10",
        **{**_FEB, "sst_k": 287.0},
        base_km=(0.80, 0.35),
        base_corr_km=5.0,
        thick_km=(0.45, 0.15),
        cloud_frac=(0.18, 0.40),
        tau_per_sd=12.0,
        sza_deg=(64.0, 62.0),
        legs_saa_deg=(120.0, 300.0, 30.0, 210.0, 165.0),
        heading_deg=330.0,
        shadow_k=1.7,
        gain=26.0,
        offset=2500.0,
        vignetting=0.015,
        land_segments=((0.62, 25.0, 350.0),),
    ),
    "30Oct24": FlightParams(
        n_slots=1500,
        start_utc="16:41:05",
        **_OCT,
        base_km=(0.95, 0.45),
        base_corr_km=6.0,
        thick_km=(0.55, 0.18),
        cloud_frac=(0.30, 0.55),
        tau_per_sd=13.0,
        sza_deg=(58.0, 52.0),
        legs_saa_deg=(218.0, 38.0, 128.0, 308.0, 263.0, 83.0),
        heading_deg=20.0,
        shadow_k=1.6,
        gain=52.0,
        offset=1200.0,
        vignetting=0.012,
        land_segments=((0.18, 30.0, 1200.0), (0.81, 20.0, 60.0)),
    ),
    "04Nov24": FlightParams(
        n_slots=555,
        start_utc="17:20:44",
        **{**_OCT, "sst_k": 295.2},
        base_km=(0.70, 0.35),
        base_corr_km=4.5,
        thick_km=(0.40, 0.12),
        cloud_frac=(0.18, 0.40),
        tau_per_sd=11.5,
        sza_deg=(57.0, 61.0),
        legs_saa_deg=(298.0, 118.0, 28.0, 208.0),
        heading_deg=200.0,
        shadow_k=1.5,
        gain=78.0,
        offset=-6000.0,
        vignetting=0.018,
        land_segments=((0.4, 15.0, 40.0),),
    ),
    "23Oct24": FlightParams(
        n_slots=525,
        start_utc="15:55:30",
        **{**_OCT, "sst_k": 297.1, "lapse_k_per_km": 5.8},
        base_km=(1.20, 0.40),
        base_corr_km=6.0,
        thick_km=(0.60, 0.20),
        cloud_frac=(0.23, 0.50),
        tau_per_sd=14.0,
        sza_deg=(52.0, 50.0),
        legs_saa_deg=(62.0, 242.0, 152.0, 332.0),
        heading_deg=95.0,
        shadow_k=1.8,
        gain=30.0,
        offset=900.0,
        vignetting=0.010,
    ),
    "18Feb25": FlightParams(
        n_slots=585,
        start_utc="20:10:00",
        **{**_FEB, "sst_k": 288.3, "lapse_k_per_km": 7.2},
        base_km=(0.60, 0.30),
        base_corr_km=4.0,
        thick_km=(0.35, 0.12),
        cloud_frac=(0.18, 0.40),
        tau_per_sd=11.0,
        sza_deg=(60.0, 65.0),
        legs_saa_deg=(167.0, 347.0, 77.0, 257.0, 122.0),
        heading_deg=185.0,
        shadow_k=1.4,
        gain=72.0,
        offset=-1800.0,
        vignetting=0.020,
        land_segments=((0.3, 20.0, 950.0),),
    ),
    "12Feb25": FlightParams(
        n_slots=488,
        start_utc="18:30:20",
        **_FEB,
        base_km=(0.90, 0.45),
        base_corr_km=4.0,
        thick_km=(0.45, 0.15),
        cloud_frac=(0.18, 0.40),
        tau_per_sd=12.5,
        sza_deg=(54.0, 57.0),
        legs_saa_deg=(248.0, 68.0),
        heading_deg=75.0,
        shadow_k=1.6,
        gain=20.0,
        offset=4000.0,
        vignetting=0.016,
        land_segments=((0.75, 12.0, 20.0),),
    ),
}
# physical constants of the scene model shared by every flight
CLOUD_OUTER_SCALE_M = 5_000.0  # fractal cloud field: spectrum flattens above this scale
CLOUD_BETA = 4.0  # power-spectrum slope (k^-beta) of the cloud field
SST_SD_K, SST_SCALE_M = 0.25, 15_000.0  # ocean temperature anomaly
LAND_DT_K, LAND_SD_K = 3.0, 1.2  # land warmer and rougher than the sea
BL_T_SD_K, BL_T_SCALE_KM = 2.0, 8.0  # boundary-layer temperature anomaly (air mass, inversion)
NETD_K = 0.06  # full-resolution pixel noise; the local frame averages 16x16 pixels
STRIPE_K = 0.08  # full-resolution column offsets (fixed pattern + slow drift)
GAIN_DRIFT = 0.002  # per-frame relative gain wander (sd)
CPL_RANGE_NOISE_KM = 0.03  # lidar base noise (one 30 m range bin)
CPL_MIN_TAU = 0.03  # thinnest cloud the lidar reports
CPL_ATTENUATED_TAU, CPL_NO_SURFACE_P = 3.0, 0.15  # surface lost under opaque cloud


@dataclass
class SynthFlight:
    """One flight's raw arrays (what the three files hold) plus the hidden scene truth."""

    name: str
    signal: np.ndarray  # (N, R, C) uint16 counts
    time_utc: np.ndarray  # (N,) epoch s
    sza_deg: np.ndarray  # (N,) with occasional NaN
    saa_deg: np.ndarray  # (N,) from the heading, with occasional NaN
    cpl_jday: np.ndarray  # (M, 3) decimal day of year: profile mid, start, end
    cpl_base_km: np.ndarray  # (M, 10) fill -9999, column 0 = boundary-layer cloud
    cpl_top_km: np.ndarray  # (M, 10)
    lidar_surface_m: np.ndarray  # (M,)
    dem_surface_m: np.ndarray  # (M,)
    cpl_time_utc: np.ndarray  # (M,) epoch s (truth; the file carries the julian day)
    gsd_m: tuple[float, float]
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # per-frame scene truth


# --- pure building blocks ---------------------------------------------------------------------
def fractal_field(
    rng: np.random.Generator,
    shape: tuple[int, int],
    gsd_m: tuple[float, float],
    outer_m: float,
    beta: float,
) -> np.ndarray:
    """(R, C) float32 zero-mean unit-sd Gaussian field, power spectrum (k^2 + k0^2)^(-beta/2).

    Scales are in metres, so the same parameters give the same cloud sizes at any GSD.
    """
    ky = np.fft.fftfreq(shape[0], d=gsd_m[0]).astype(np.float32)[:, None]  # (R, 1) cycles/m
    kx = np.fft.rfftfreq(shape[1], d=gsd_m[1]).astype(np.float32)[None, :]  # (1, C//2+1)
    amp = (ky**2 + kx**2 + (1.0 / outer_m) ** 2) ** (-beta / 4.0)  # sqrt of the power
    noise = rng.standard_normal(shape, dtype=np.float32)
    f = np.fft.irfft2(np.fft.rfft2(noise) * amp, s=shape).astype(np.float32)
    f -= f.mean()
    f /= f.std() + 1e-12
    return f


def smooth_series(rng: np.random.Generator, n: int, corr_steps: float) -> np.ndarray:
    """(n,) zero-mean unit-sd autocorrelated series (Gaussian-filtered white noise)."""
    pad = int(3 * corr_steps) + 1
    x = ndimage.gaussian_filter1d(rng.standard_normal(n + 2 * pad), max(corr_steps, 1e-3))
    x = x[pad : pad + n]
    return (x - x.mean()) / (x.std() + 1e-12)


def cloud_optical_depth(
    field_: np.ndarray, cloud_frac: np.ndarray, tau_per_sd: float
) -> np.ndarray:
    """(R, C) optical depth: the field thresholded row-wise at the (R,) cloud fraction."""
    thresh = special.ndtri(1.0 - np.clip(cloud_frac, 0.01, 0.99)).astype(np.float32)  # (R,)
    return np.maximum(field_ - thresh[:, None], 0.0) * np.float32(tau_per_sd)


def shadow_optical_depth(
    tau: np.ndarray,
    heights_km: np.ndarray,
    sza_deg: np.ndarray,
    saa_deg: np.ndarray,
    gsd_m: tuple[float, float],
) -> np.ndarray:
    """(R, C) slant optical depth of the sun's path from each ground pixel through the cloud.

    `heights_km` (K, R): layer heights sampled from base to top per ground row; sza/saa (R,).
    The sun is at azimuth saa from the heading (row 0 = forward), so the ray from ground
    point p meets height z at p + z*tan(SZA)*(-cos saa, +sin saa) in (row, col) metres.
    """
    r, c = tau.shape
    tan_z = np.tan(np.radians(sza_deg))  # (R,)
    az = np.radians(saa_deg)
    rows = np.arange(r, dtype=np.float32)[:, None]
    cols = np.arange(c, dtype=np.float32)[None, :]
    acc = np.zeros_like(tau)
    for z in heights_km:  # (R,) each
        d = z * 1000.0 * tan_z  # (R,) horizontal reach in metres
        dr = (-np.cos(az) * d / gsd_m[0]).astype(np.float32)[:, None]
        dc = (np.sin(az) * d / gsd_m[1]).astype(np.float32)[:, None]
        coords = np.stack(np.broadcast_arrays(rows + dr, cols + dc))  # (2, R, C)
        acc += ndimage.map_coordinates(tau, coords, order=1, mode="constant", cval=0.0)
    return acc / len(heights_km) / np.cos(np.radians(sza_deg)).astype(np.float32)[:, None]


def vignette(shape: tuple[int, int], strength: float) -> np.ndarray:
    """(R, C) multiplicative radial fall-off, 1 at the centre, 1 - strength at the corners."""
    r = np.linspace(-1, 1, shape[0])[:, None]
    c = np.linspace(-1, 1, shape[1])[None, :]
    return (1.0 - strength * (r**2 + c**2) / 2.0).astype(np.float32)


def view_frame(
    ground: np.ndarray,
    nadir_row: float,
    nadir_col: float,
    scale: float,
    frame: tuple[int, int],
) -> np.ndarray:
    """(K, R, C) frame sampled bilinearly from (K, G, W) ground layers around nadir.

    An image pixel at offset p from nadir sees a layer at height z at ground offset
    p * (1 - z/H) (relief displacement); scale = 1 - z/H, and 1 for the surface. The
    mapping is separable (rows, cols), so it is two gathers instead of a 2-D transform.
    """
    rr, cc = frame
    _, g, w = ground.shape
    rows = nadir_row + (np.arange(rr) - (rr - 1) / 2.0) * scale  # (R,) ground rows
    cols = nadir_col + (np.arange(cc) - (cc - 1) / 2.0) * scale  # (C,) ground cols
    i0 = np.clip(np.floor(rows).astype(np.intp), 0, g - 2)
    j0 = np.clip(np.floor(cols).astype(np.intp), 0, w - 2)
    wr = np.clip(rows - i0, 0.0, 1.0).astype(np.float32)[None, :, None]  # (1, R, 1)
    wc = np.clip(cols - j0, 0.0, 1.0).astype(np.float32)[None, None, :]  # (1, 1, C)
    near, far = ground[:, i0], ground[:, i0 + 1]  # (K, R, W) each
    near = near[:, :, j0] * (1 - wc) + near[:, :, j0 + 1] * wc  # (K, R, C)
    far = far[:, :, j0] * (1 - wc) + far[:, :, j0 + 1] * wc
    return near * (1 - wr) + far * wr


def _epoch(date: str, hhmmss: str) -> float:
    h, m, s = (int(v) for v in hhmmss.split(":"))
    return float(calendar.timegm((int(date[:4]), int(date[4:6]), int(date[6:]), h, m, s)))


def _day_of_year(epoch_s: np.ndarray, year: int) -> np.ndarray:
    """(M,) epoch seconds -> decimal day of year, 1.0 = 1 Jan 00:00 UTC (CPL convention)."""
    return 1.0 + (epoch_s - calendar.timegm((year, 1, 1, 0, 0, 0))) / 86400.0


# --- one flight ---------------------------------------------------------------------------------
def synth_flight(
    name: str,
    seed: int = 0,
    frame_size: tuple[int, int] = LOCAL_FRAME,
    params: FlightParams | None = None,
) -> SynthFlight:
    """Simulate one flight; same (name, seed, frame_size) -> identical arrays.

    The ground scene is a set of float32 (G, W) layers, G ~ leg length / GSD plus shadow
    margins, and frames are rendered one at a time into the uint16 output: at full size the
    30Oct24 leg peaks at ~1.3 GB, of which 0.8 GB is the (N, 512, 640) uint16 signal itself.
    """
    flight = get_flight(name)
    p = params or FLIGHT_PARAMS[name]
    rows, cols = frame_size
    if rows < 8 or cols < 8:
        raise ConfigError(f"frame_size: need at least 8x8 pixels, got {rows}x{cols}")
    gsd = (FOOTPRINT_M[0] / rows, FOOTPRINT_M[1] / cols)  # (along, cross) m per pixel
    px_scale = np.sqrt((FULL_GSD_M / gsd[0]) * (FULL_GSD_M / gsd[1]))  # <1: local averages
    rng = np.random.default_rng([seed, FLIGHT_NAMES.index(name)])

    # --- time line: frame slots, dropouts, aircraft position ------------------------------
    t0 = _epoch(flight.date, p.start_utc)
    slots = np.arange(p.n_slots)
    keep = np.ones(p.n_slots, bool)
    for s in np.flatnonzero(rng.random(p.n_slots) < p.frame_drop):
        keep[s : s + rng.integers(1, 4)] = False
    n_legs = len(p.legs_saa_deg)
    leg_slots = p.n_slots / n_legs
    for i in range(1, n_legs):  # turns between legs: no camera frames are kept
        keep[int(i * leg_slots) : int(i * leg_slots) + TURN_S] = False
    keep[:3] = keep[-3:] = True

    def saa_at(t: np.ndarray) -> np.ndarray:
        """Solar azimuth from the heading at times t: per leg, plus the sun's slow drift."""
        slot = (np.asarray(t) - t0) / FRAME_DT_S
        leg = np.clip((slot // leg_slots).astype(int), 0, n_legs - 1)
        drift = p.saa_drift_deg * np.clip(slot / p.n_slots, 0.0, 1.0)
        return np.mod(np.asarray(p.legs_saa_deg)[leg] + drift, 360.0)

    frame_t = t0 + slots[keep] * FRAME_DT_S + rng.normal(0.0, 0.01, keep.sum())  # (N,)
    n = len(frame_t)

    # --- ground grid: rows along-track (row 0 = far ahead), cols cross-track --------------
    adv = SPEED_MPS * FRAME_DT_S / gsd[0]  # ground rows per frame
    m_r = int(np.ceil(MAX_SHADOW_M / gsd[0])) + 2
    m_c = int(np.ceil(MAX_SHADOW_M / gsd[1])) + 2
    g_rows = int(np.ceil(adv * (p.n_slots + 2))) + rows + 2 * m_r
    g_cols = cols + 2 * m_c
    nadir0 = g_rows - 1 - m_r - rows / 2.0  # nadir row at t0; the aircraft flies toward row 0

    def nadir_row(t: np.ndarray) -> np.ndarray:
        return nadir0 - (t - t0) * SPEED_MPS / gsd[0]

    row_t = t0 + (nadir0 - np.arange(g_rows)) * gsd[0] / SPEED_MPS  # (G,) time over each row
    frac = np.clip((row_t - t0) / (p.n_slots * FRAME_DT_S), 0.0, 1.0)  # (G,) leg fraction

    # --- along-track series (per ground row) ----------------------------------------------
    corr = lambda km: km * 1000.0 / gsd[0]  # noqa: E731  km -> ground rows
    base = p.base_km[0] + p.base_km[1] * smooth_series(rng, g_rows, corr(p.base_corr_km))
    base = np.maximum(base, 0.05)  # (G,) km; a few dips below 0.1 km (fog) fail the filter
    thick = np.maximum(p.thick_km[0] + p.thick_km[1] * smooth_series(rng, g_rows, corr(5.0)), 0.1)
    top = base + thick  # (G,)
    cf_lo, cf_hi = p.cloud_frac
    cf = cf_lo + (cf_hi - cf_lo) * special.ndtr(1.2 * smooth_series(rng, g_rows, corr(4.0)))
    sza_g = (
        p.sza_deg[0]
        + (p.sza_deg[1] - p.sza_deg[0]) * frac
        + 0.3 * smooth_series(rng, g_rows, corr(20.0))
    )
    saa_g = saa_at(row_t)  # (G,)

    # --- ground layers ----------------------------------------------------------------------
    land = np.zeros(g_rows, np.float32)  # (G,) 1 over land
    dem_g = np.zeros(g_rows, np.float32)
    for start, length_s, dem_m in p.land_segments:
        t_a = t0 + start * p.n_slots * FRAME_DT_S
        on = (row_t >= t_a) & (row_t < t_a + length_s)
        land[on], dem_g[on] = 1.0, dem_m
    cloud_f = fractal_field(rng, (g_rows, g_cols), gsd, CLOUD_OUTER_SCALE_M, CLOUD_BETA)
    tau = cloud_optical_depth(cloud_f, cf, p.tau_per_sd)  # (G, W)
    del cloud_f
    sst = p.sst_k + SST_SD_K * fractal_field(rng, (g_rows, g_cols), gsd, SST_SCALE_M, 4.0)
    land_f = fractal_field(rng, (g_rows, g_cols), gsd, 2_000.0, 3.0)
    surface = sst + land[:, None] * (LAND_DT_K + LAND_SD_K * land_f)  # (G, W) K
    del sst, land_f
    heights = np.stack([base, (base + top) / 2.0, top])  # (3, G) km, base to top
    sh_tau = shadow_optical_depth(tau, heights, sza_g, saa_g, gsd)
    surface -= p.shadow_k * (1.0 - np.exp(-sh_tau))  # cooled where the sun is blocked
    del sh_tau
    emis = 1.0 - np.exp(-tau)  # (G, W)
    bl_dt = BL_T_SD_K * smooth_series(rng, g_rows, corr(BL_T_SCALE_KM))  # (G,) K
    t_top = (p.sst_k - p.air_sea_dt_k - p.lapse_k_per_km * top + bl_dt).astype(np.float32)  # (G,)
    cloud_layers = np.stack([emis, emis * t_top[:, None]]).astype(np.float32)  # (2, G, W)
    surface = surface[None].astype(np.float32)  # (1, G, W)

    # --- sensor ---------------------------------------------------------------------------------
    vig = vignette((rows, cols), p.vignetting)  # (R, C)
    stripes = STRIPE_K * np.sqrt(px_scale) * rng.standard_normal(cols).astype(np.float32)
    stripe_drift = 0.3 * STRIPE_K * np.sqrt(px_scale) * rng.standard_normal(cols)
    drift = 1.0 + GAIN_DRIFT * smooth_series(rng, n, 30.0)  # (N,)
    noise_k = NETD_K * px_scale

    signal = np.empty((n, rows, cols), np.uint16)  # (N, R, C)
    g_idx = np.arange(g_rows, dtype=float)
    fr_nadir = nadir_row(frame_t)  # (N,)
    fr_top = np.interp(fr_nadir, g_idx, top)  # (N,) km at nadir
    c_nadir = m_c + (cols - 1) / 2.0
    for k in range(n):
        surf = view_frame(surface, fr_nadir[k], c_nadir, 1.0, (rows, cols))[0]  # (R, C) K
        scale = 1.0 - fr_top[k] * 1000.0 / ALTITUDE_M  # relief displacement of the cloud tops
        e, et = view_frame(cloud_layers, fr_nadir[k], c_nadir, scale, (rows, cols))
        bt = et + (1.0 - e) * surf  # (R, C) K: cloud and surface mixed by emissivity
        bt += noise_k * rng.standard_normal((rows, cols), dtype=np.float32)
        counts = p.offset + p.gain * drift[k] * vig * bt
        counts += p.gain * (stripes + stripe_drift * (k / n))[None, :]
        signal[k] = np.clip(np.rint(counts), 0, 65534)  # 65535 is the sensor fill
    del surface, cloud_layers

    # --- nav: per frame, slowly varying, occasional NaN ----------------------------------------
    sza = np.interp(fr_nadir, g_idx, sza_g)
    saa = saa_at(frame_t)
    sza_out, saa_out = sza.copy(), saa.copy()
    sza_out[rng.random(n) < 0.004] = np.nan
    saa_out[rng.random(n) < 0.004] = np.nan

    # --- CPL: nadir lidar over the same scene ---------------------------------------------------
    m = p.n_slots + 2
    cpl_t = t0 - 1.0 + rng.uniform(0.0, 1.0) + np.arange(m) * 1.0002
    cpl_t += rng.normal(0.0, p.cpl_jitter_s, m)
    cpl_t = np.sort(cpl_t)
    prow = nadir_row(cpl_t)  # (M,) ground row under the aircraft
    tau_nadir = ndimage.map_coordinates(
        tau, np.stack([prow, np.full(m, c_nadir)]), order=1, mode="nearest"
    )  # (M,)
    b_n = np.interp(prow, g_idx, base)
    t_n = np.interp(prow, g_idx, top)
    cloudy = tau_nadir > CPL_MIN_TAU
    cpl_base = np.full((m, layout.CPL_MAX_LAYERS), layout.CPL_FILL, np.float32)
    cpl_top = np.full((m, layout.CPL_MAX_LAYERS), layout.CPL_FILL, np.float32)
    meas_b = b_n + rng.normal(0.0, CPL_RANGE_NOISE_KM, m)
    meas_t = t_n + rng.normal(0.0, CPL_RANGE_NOISE_KM, m)
    cpl_base[cloudy, 0], cpl_top[cloudy, 0] = meas_b[cloudy], meas_t[cloudy]
    upper = rng.random(m) < p.second_layer_prob  # thin upper layer, too thin to see in IR
    up_b = rng.uniform(3.0, 8.0, m)
    col = np.where(cloudy, 1, 0)
    cpl_base[upper, col[upper]] = up_b[upper]
    cpl_top[upper, col[upper]] = up_b[upper] + rng.uniform(0.3, 1.2, upper.sum())
    dem = np.interp(prow, g_idx, dem_g).astype(np.float32)
    dem = np.where(dem > 0, np.round(dem + rng.normal(0, 5.0, m)), 0.0)  # m; exact 0 at sea
    # m; the sea surface stays within +-0.9 so the ocean rule holds whether the 0.9 threshold
    # is read as km (DESIGN) or, as the research code did, against the raw metres
    sea = np.clip(rng.normal(0.0, 0.3, m), -0.85, 0.85)
    lidar = np.where(dem > 0, dem + rng.normal(0.0, 8.0, m), sea)
    lost = (tau_nadir > CPL_ATTENUATED_TAU) & (rng.random(m) < CPL_NO_SURFACE_P)
    lidar[lost] = layout.CPL_FILL
    year = int(flight.date[:4])
    mid = _day_of_year(cpl_t, year)
    jday = np.stack([mid, mid - 0.5 / 86400.0, mid + 0.5 / 86400.0], axis=1)  # (M, 3)

    truth = {
        "base_km": np.interp(fr_nadir, g_idx, base),  # (N,) at nadir
        "top_km": fr_top,
        "sza_deg": sza,
        "saa_deg": saa,
        "cloud_frac": np.interp(fr_nadir, g_idx, cf),
        "cpl_base_true_km": np.where(cloudy, b_n, np.nan),  # (M,)
    }
    return SynthFlight(
        name,
        signal,
        frame_t,
        sza_out,
        saa_out,
        jday,
        cpl_base,
        cpl_top,
        lidar.astype(np.float32),
        dem.astype(np.float32),
        cpl_t,
        gsd,
        truth,
    )


# --- I/O -------------------------------------------------------------------------------------------
def write_flight(
    out_dir: str | Path, name: str, seed: int = 0, frame_size: tuple[int, int] = LOCAL_FRAME
) -> dict:
    """Simulate and write out_dir/<flight>/<three raw files>, atomically as one directory."""
    t_start = time.perf_counter()
    fl = synth_flight(name, seed, frame_size)
    flight = get_flight(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir))
    try:
        layout.write_irai(tmp / flight.irai_file, fl.signal, fl.time_utc)
        layout.write_cpl(
            tmp / flight.cpl_file,
            fl.cpl_jday,
            fl.cpl_base_km,
            fl.lidar_surface_m,
            fl.dem_surface_m,
            layer_top_km=fl.cpl_top_km,
        )
        layout.write_nav(tmp / flight.nav_file, fl.sza_deg, fl.saa_deg)
        if dest.exists():  # replace a previous flight only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=out_dir))
            os.replace(dest, old / name)
            os.replace(tmp, dest)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    cbh = fl.cpl_base_km[:, 0]
    summary = {
        "flight": name,
        "dir": str(dest),
        "frames": int(fl.signal.shape[0]),
        "frame_size": [int(fl.signal.shape[1]), int(fl.signal.shape[2])],
        "gsd_m": [round(g, 2) for g in fl.gsd_m],
        "profiles": int(len(cbh)),
        "cloudy_profiles": int((cbh != layout.CPL_FILL).sum()),
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    log.info(
        "synth %s: %d frames %dx%d, %d CPL profiles (%d cloudy) in %.1f s -> %s",
        name,
        summary["frames"],
        *summary["frame_size"],
        summary["profiles"],
        summary["cloudy_profiles"],
        summary["seconds"],
        dest,
    )
    return summary


def write_campaign(
    out_dir: str | Path,
    seed: int = 0,
    frame_size: tuple[int, int] = LOCAL_FRAME,
    flights: tuple[str, ...] | list[str] = FLIGHT_NAMES,
) -> dict:
    """Write every flight in `flights` under out_dir; {flight: summary}."""
    for name in flights:
        get_flight(name)  # fail on a typo before writing anything
    return {name: write_flight(out_dir, name, seed, frame_size) for name in flights}


def parse_frame_size(text: str) -> tuple[int, int]:
    """'local' -> (26, 32), 'full' -> (512, 640), '64x80' -> (64, 80)."""
    t = text.strip().lower()
    if t == "local":
        return LOCAL_FRAME
    if t == "full":
        return (layout.FULL_ROWS, layout.FULL_COLS)
    r, sep, c = t.partition("x")
    if not sep or not r.isdigit() or not c.isdigit() or int(r) < 8 or int(c) < 8:
        raise ConfigError(
            f"--frame-size: expected ROWSxCOLS (each >= 8), 'local' or 'full', got {text!r}"
        )
    return int(r), int(c)


def _run(args: argparse.Namespace) -> int:
    flights = [f.strip() for f in args.flights.split(",") if f.strip()]
    write_campaign(args.out, args.seed, parse_frame_size(args.frame_size), flights)
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the synthetic six-flight campaign in the raw layout")
    p.add_argument("--out", required=True, help="output directory (one folder per flight)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frame-size", default="local", help="ROWSxCOLS, 'local' (26x32) or 'full'")
    p.add_argument("--flights", default=",".join(FLIGHT_NAMES), help="comma-separated subset")
    p.set_defaults(func=_run)
