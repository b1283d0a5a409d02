"""Parameter tables of the synthetic campaign (cloudml.data.synth): platform and frame
geometry, each flight's scene/instrument/sampling parameters, and the physical constants of
the scene model that every flight shares. Data only; the simulation is in synth_scene."""

from __future__ import annotations

from dataclasses import dataclass

from cloudml.data import layout

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
