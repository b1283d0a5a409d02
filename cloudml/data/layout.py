"""The instruments' raw HDF5 layout (docs/physics.md, 'Raw flight files'): dataset paths, and
writers for it.

Readers (cloudml.data.raw) check files against these paths; the synthetic campaign
(cloudml.data.synth) and the tests write files through the writers below, so both sides
agree byte for byte on where things live.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

# IRAI L1B image file
IRAI_SIGNAL = "Product/Signal"  # (N, rows, cols) raw counts, uint16 or float
IRAI_TIME = "Time/TimeUTC"  # (N,) seconds since the Unix epoch
# CPL L2 layer file
CPL_JDAY = "layer_descriptor/Profile_Decimal_Julian_Day"  # (M, 3), column 0 used
CPL_BASE = "layer_descriptor/Layer_Base_Altitude"  # (M, 10) km, fill -9999, col 0 = label
CPL_TOP = "layer_descriptor/Layer_Top_Altitude"  # (M, 10) km (written for realism, unused)
CPL_LIDAR_SURF = "layer_descriptor/Lidar_Surface_Altitude"  # (M,) m
CPL_DEM_SURF = "layer_descriptor/DEM_Surface_Altitude"  # (M,) m
CPL_FILL = -9999.0
CPL_MAX_LAYERS = 10
# nav file
NAV_SZA = "nav/solarZenith"  # (N,) deg, may hold NaN
NAV_SAA = "nav/sunAzGrd"  # (N,) deg, may hold NaN

FULL_ROWS, FULL_COLS = 512, 640


def write_irai(path: str | Path, signal: np.ndarray, time_utc: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset(IRAI_SIGNAL, data=signal, chunks=(1, *signal.shape[1:]))
        f.create_dataset(IRAI_TIME, data=np.asarray(time_utc, dtype=np.float64))
        f.attrs["instrument"] = "IRAI"
        f.attrs["processing_level"] = "L1B"


def write_cpl(
    path: str | Path,
    julian_day: np.ndarray,
    layer_base_km: np.ndarray,
    lidar_surface_m: np.ndarray,
    dem_surface_m: np.ndarray,
    layer_top_km: np.ndarray | None = None,
) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset(CPL_JDAY, data=np.asarray(julian_day, dtype=np.float64))
        f.create_dataset(CPL_BASE, data=np.asarray(layer_base_km, dtype=np.float32))
        if layer_top_km is not None:
            f.create_dataset(CPL_TOP, data=np.asarray(layer_top_km, dtype=np.float32))
        f.create_dataset(CPL_LIDAR_SURF, data=np.asarray(lidar_surface_m, dtype=np.float32))
        f.create_dataset(CPL_DEM_SURF, data=np.asarray(dem_surface_m, dtype=np.float32))
        f.attrs["instrument"] = "CPL"
        f.attrs["processing_level"] = "L2"


def write_nav(path: str | Path, sza_deg: np.ndarray, saa_deg: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset(NAV_SZA, data=np.asarray(sza_deg, dtype=np.float64))
        f.create_dataset(NAV_SAA, data=np.asarray(saa_deg, dtype=np.float64))
