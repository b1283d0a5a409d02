"""The physical steps of one synthetic flight, in the order cloudml.data.synth.synth_flight
runs them: frame time line, ground grid, along-track series, ground layers (cloud, surface
with shadows), IRAI frames through the sensor model, navigation, and the CPL lidar.

The steps that take `rng` draw from the flight's one generator. synth_flight calls them in
a fixed order and each draws in a fixed order, so the same seed gives bit-identical files:
moving a draw (or a step) changes every flight written after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

from cloudml.data import layout
from cloudml.data.synth_params import (
    ALTITUDE_M,
    BL_T_SCALE_KM,
    BL_T_SD_K,
    CLOUD_BETA,
    CLOUD_OUTER_SCALE_M,
    CPL_ATTENUATED_TAU,
    CPL_MIN_TAU,
    CPL_NO_SURFACE_P,
    CPL_RANGE_NOISE_KM,
    FOOTPRINT_M,
    FRAME_DT_S,
    FULL_GSD_M,
    GAIN_DRIFT,
    LAND_DT_K,
    LAND_SD_K,
    MAX_SHADOW_M,
    NETD_K,
    SPEED_MPS,
    SST_SCALE_M,
    SST_SD_K,
    STRIPE_K,
    TURN_S,
    FlightParams,
)
from cloudml.data.synth_physics import (
    cloud_optical_depth,
    day_of_year,
    fractal_field,
    shadow_optical_depth,
    smooth_series,
    view_frame,
    vignette,
)


# --- time line and geometry -------------------------------------------------------------------
def solar_azimuth(t: np.ndarray, t0: float, p: FlightParams) -> np.ndarray:
    """Solar azimuth from the heading at times t: per leg, plus the sun's slow drift."""
    n_legs = len(p.legs_saa_deg)
    leg_slots = p.n_slots / n_legs
    slot = (np.asarray(t) - t0) / FRAME_DT_S
    leg = np.clip((slot // leg_slots).astype(int), 0, n_legs - 1)
    drift = p.saa_drift_deg * np.clip(slot / p.n_slots, 0.0, 1.0)
    return np.mod(np.asarray(p.legs_saa_deg)[leg] + drift, 360.0)


def frame_times(rng: np.random.Generator, p: FlightParams, t0: float) -> np.ndarray:
    """(N,) epoch s of the kept IRAI frames: slots less dropouts and turns, clock jitter."""
    slots = np.arange(p.n_slots)
    keep = np.ones(p.n_slots, bool)
    for s in np.flatnonzero(rng.random(p.n_slots) < p.frame_drop):
        keep[s : s + rng.integers(1, 4)] = False
    n_legs = len(p.legs_saa_deg)
    leg_slots = p.n_slots / n_legs
    for i in range(1, n_legs):  # turns between legs: no camera frames are kept
        keep[int(i * leg_slots) : int(i * leg_slots) + TURN_S] = False
    keep[:3] = keep[-3:] = True
    return t0 + slots[keep] * FRAME_DT_S + rng.normal(0.0, 0.01, keep.sum())  # (N,)


@dataclass
class GroundGrid:
    """Ground coordinates: rows along-track (row 0 = far ahead), cols cross-track.

    The aircraft flies toward row 0; margins of m_r x m_c pixels around the footprint hold
    the shadows cast from outside it.
    """

    frame: tuple[int, int]  # (R, C) image pixels
    gsd: tuple[float, float]  # (along, cross) m per pixel
    t0: float  # epoch s of the first frame slot
    n_slots: int
    m_r: int  # margin rows
    m_c: int  # margin cols
    rows: int  # G
    cols: int  # W
    nadir0: float  # nadir row at t0
    row_t: np.ndarray  # (G,) time over each row
    idx: np.ndarray  # (G,) float row numbers, the abscissa of the per-row series

    @classmethod
    def build(cls, frame: tuple[int, int], t0: float, n_slots: int) -> GroundGrid:
        """The grid for (R, C) frames over a leg of n_slots frame slots from t0."""
        rows, cols = frame
        gsd = (FOOTPRINT_M[0] / rows, FOOTPRINT_M[1] / cols)
        adv = SPEED_MPS * FRAME_DT_S / gsd[0]  # ground rows per frame
        m_r = int(np.ceil(MAX_SHADOW_M / gsd[0])) + 2
        m_c = int(np.ceil(MAX_SHADOW_M / gsd[1])) + 2
        g_rows = int(np.ceil(adv * (n_slots + 2))) + rows + 2 * m_r
        g_cols = cols + 2 * m_c
        nadir0 = g_rows - 1 - m_r - rows / 2.0  # the aircraft flies toward row 0
        row_t = t0 + (nadir0 - np.arange(g_rows)) * gsd[0] / SPEED_MPS
        idx = np.arange(g_rows, dtype=float)
        return cls(frame, gsd, t0, n_slots, m_r, m_c, g_rows, g_cols, nadir0, row_t, idx)

    @property
    def px_scale(self) -> float:
        """Linear pixel size of a full frame over this one's (<1: local pixels average)."""
        return np.sqrt((FULL_GSD_M / self.gsd[0]) * (FULL_GSD_M / self.gsd[1]))

    @property
    def c_nadir(self) -> float:
        """Ground column under the aircraft."""
        return self.m_c + (self.frame[1] - 1) / 2.0

    def nadir_row(self, t: np.ndarray) -> np.ndarray:
        """Ground row under the aircraft at times t."""
        return self.nadir0 - (t - self.t0) * SPEED_MPS / self.gsd[0]

    def rows_per_km(self, km: float) -> float:
        """A length along-track in ground rows."""
        return km * 1000.0 / self.gsd[0]


# --- the scene on the ground ------------------------------------------------------------------
@dataclass
class Track:
    """(G,) per-ground-row series along the track."""

    base_km: np.ndarray  # cloud base
    top_km: np.ndarray  # cloud top
    cloud_frac: np.ndarray
    sza_deg: np.ndarray
    saa_deg: np.ndarray  # from the heading


def track_series(rng: np.random.Generator, p: FlightParams, grid: GroundGrid) -> Track:
    """Cloud base/top, cloud fraction and sun angles per ground row (slowly varying)."""
    g_rows, corr = grid.rows, grid.rows_per_km
    frac = np.clip((grid.row_t - grid.t0) / (p.n_slots * FRAME_DT_S), 0.0, 1.0)  # leg fraction
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
    return Track(base, top, cf, sza_g, solar_azimuth(grid.row_t, grid.t0, p))


def land_profile(p: FlightParams, grid: GroundGrid) -> tuple[np.ndarray, np.ndarray]:
    """(G,) 1 over land else 0, and (G,) terrain height in m (0 at sea)."""
    land = np.zeros(grid.rows, np.float32)
    dem_g = np.zeros(grid.rows, np.float32)
    for start, length_s, dem_m in p.land_segments:
        t_a = grid.t0 + start * p.n_slots * FRAME_DT_S
        on = (grid.row_t >= t_a) & (grid.row_t < t_a + length_s)
        land[on], dem_g[on] = 1.0, dem_m
    return land, dem_g


def cloud_tau(
    rng: np.random.Generator, p: FlightParams, grid: GroundGrid, track: Track
) -> np.ndarray:
    """(G, W) cloud optical depth: a fractal field thresholded at the cloud fraction."""
    cloud_f = fractal_field(rng, (grid.rows, grid.cols), grid.gsd, CLOUD_OUTER_SCALE_M, CLOUD_BETA)
    return cloud_optical_depth(cloud_f, track.cloud_frac, p.tau_per_sd)


def surface_temperature(
    rng: np.random.Generator,
    p: FlightParams,
    grid: GroundGrid,
    track: Track,
    tau: np.ndarray,
    land: np.ndarray,
) -> np.ndarray:
    """(1, G, W) float32 K: sea (or warmer, rougher land), cooled under the cloud shadows."""
    shape = (grid.rows, grid.cols)
    sst = p.sst_k + SST_SD_K * fractal_field(rng, shape, grid.gsd, SST_SCALE_M, 4.0)
    land_f = fractal_field(rng, shape, grid.gsd, 2_000.0, 3.0)
    surface = sst + land[:, None] * (LAND_DT_K + LAND_SD_K * land_f)  # (G, W) K
    del sst, land_f
    base, top = track.base_km, track.top_km
    heights = np.stack([base, (base + top) / 2.0, top])  # (3, G) km, base to top
    sh_tau = shadow_optical_depth(tau, heights, track.sza_deg, track.saa_deg, grid.gsd)
    surface -= p.shadow_k * (1.0 - np.exp(-sh_tau))  # cooled where the sun is blocked
    del sh_tau
    return surface[None].astype(np.float32)


def cloud_layers(
    rng: np.random.Generator, p: FlightParams, grid: GroundGrid, track: Track, tau: np.ndarray
) -> np.ndarray:
    """(2, G, W) float32: cloud emissivity and emissivity x cloud-top temperature (K)."""
    top = track.top_km  # (G,) km
    emis = 1.0 - np.exp(-tau)  # (G, W)
    bl_dt = BL_T_SD_K * smooth_series(rng, grid.rows, grid.rows_per_km(BL_T_SCALE_KM))  # (G,) K
    t_top = (p.sst_k - p.air_sea_dt_k - p.lapse_k_per_km * top + bl_dt).astype(np.float32)  # (G,)
    return np.stack([emis, emis * t_top[:, None]]).astype(np.float32)


# --- the instruments --------------------------------------------------------------------------
def render_frames(
    rng: np.random.Generator,
    p: FlightParams,
    grid: GroundGrid,
    surface: np.ndarray,
    layers: np.ndarray,
    fr_nadir: np.ndarray,
    fr_top: np.ndarray,
) -> np.ndarray:
    """(N, R, C) uint16 IRAI counts: each frame's view of the scene through the sensor model.

    fr_nadir, fr_top (N,): ground row and cloud-top height (km) under the aircraft per frame.
    """
    rows, cols = grid.frame
    n = len(fr_nadir)
    px_scale = grid.px_scale
    vig = vignette((rows, cols), p.vignetting)  # (R, C)
    stripes = STRIPE_K * np.sqrt(px_scale) * rng.standard_normal(cols).astype(np.float32)
    stripe_drift = 0.3 * STRIPE_K * np.sqrt(px_scale) * rng.standard_normal(cols)
    drift = 1.0 + GAIN_DRIFT * smooth_series(rng, n, 30.0)  # (N,)
    noise_k = NETD_K * px_scale

    signal = np.empty((n, rows, cols), np.uint16)  # (N, R, C)
    c_nadir = grid.c_nadir
    for k in range(n):
        surf = view_frame(surface, fr_nadir[k], c_nadir, 1.0, (rows, cols))[0]  # (R, C) K
        scale = 1.0 - fr_top[k] * 1000.0 / ALTITUDE_M  # relief displacement of the cloud tops
        e, et = view_frame(layers, fr_nadir[k], c_nadir, scale, (rows, cols))
        bt = et + (1.0 - e) * surf  # (R, C) K: cloud and surface mixed by emissivity
        bt += noise_k * rng.standard_normal((rows, cols), dtype=np.float32)
        counts = p.offset + p.gain * drift[k] * vig * bt
        counts += p.gain * (stripes + stripe_drift * (k / n))[None, :]
        signal[k] = np.clip(np.rint(counts), 0, 65534)  # 65535 is the sensor fill
    return signal


def navigation(
    rng: np.random.Generator, sza: np.ndarray, saa: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Copies of the (N,) per-frame sun angles as the nav file has them: occasional NaN."""
    n = len(sza)
    sza_out, saa_out = sza.copy(), saa.copy()
    sza_out[rng.random(n) < 0.004] = np.nan
    saa_out[rng.random(n) < 0.004] = np.nan
    return sza_out, saa_out


@dataclass
class LidarRecord:
    """What the CPL reports over the same scene, M profiles (plus the true base)."""

    time_utc: np.ndarray  # (M,) epoch s
    jday: np.ndarray  # (M, 3) decimal day of year: profile mid, start, end
    base_km: np.ndarray  # (M, 10) fill -9999, column 0 = boundary-layer cloud
    top_km: np.ndarray  # (M, 10)
    lidar_surface_m: np.ndarray  # (M,) float32
    dem_surface_m: np.ndarray  # (M,) float32
    base_true_km: np.ndarray  # (M,) NaN where clear


def lidar_profiles(
    rng: np.random.Generator,
    p: FlightParams,
    grid: GroundGrid,
    track: Track,
    tau: np.ndarray,
    dem_g: np.ndarray,
    year: int,
) -> LidarRecord:
    """The nadir lidar: base/top of the cloud under the aircraft with range noise (fill when
    clear), a thin upper layer now and then, the surface (lost under opaque cloud), DEM."""
    m = p.n_slots + 2
    cpl_t = grid.t0 - 1.0 + rng.uniform(0.0, 1.0) + np.arange(m) * 1.0002
    cpl_t += rng.normal(0.0, p.cpl_jitter_s, m)
    cpl_t = np.sort(cpl_t)
    prow = grid.nadir_row(cpl_t)  # (M,) ground row under the aircraft
    tau_nadir = ndimage.map_coordinates(
        tau, np.stack([prow, np.full(m, grid.c_nadir)]), order=1, mode="nearest"
    )  # (M,)
    b_n = np.interp(prow, grid.idx, track.base_km)
    t_n = np.interp(prow, grid.idx, track.top_km)
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
    dem = np.interp(prow, grid.idx, dem_g).astype(np.float32)
    dem = np.where(dem > 0, np.round(dem + rng.normal(0, 5.0, m)), 0.0)  # m; exact 0 at sea
    # m; the sea surface stays within +-0.9 so the ocean rule holds whether the 0.9 threshold
    # is read as km (docs/physics.md, 'Label rules') or, as the research code did, against the
    # raw metres
    sea = np.clip(rng.normal(0.0, 0.3, m), -0.85, 0.85)
    lidar = np.where(dem > 0, dem + rng.normal(0.0, 8.0, m), sea)
    lost = (tau_nadir > CPL_ATTENUATED_TAU) & (rng.random(m) < CPL_NO_SURFACE_P)
    lidar[lost] = layout.CPL_FILL
    mid = day_of_year(cpl_t, year)
    jday = np.stack([mid, mid - 0.5 / 86400.0, mid + 0.5 / 86400.0], axis=1)  # (M, 3)
    return LidarRecord(
        cpl_t,
        jday,
        cpl_base,
        cpl_top,
        lidar.astype(np.float32),
        dem.astype(np.float32),
        np.where(cloudy, b_n, np.nan),
    )
