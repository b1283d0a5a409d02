"""Small valid (and deliberately broken) raw flights for tests, written via cloudml.data.layout.

arrays = flight_arrays()            # dict of the raw arrays, editable
paths = write_flight(tmp_path, "30Oct24", arrays)   # -> (irai, cpl, nav) paths
"""

from __future__ import annotations

import calendar
from pathlib import Path

import numpy as np

from cloudml.data import layout
from cloudml.flights import flight_paths

T0 = float(calendar.timegm((2024, 10, 30, 18, 0, 0)))  # 30Oct24 18:00 UTC
YEAR0 = float(calendar.timegm((2024, 1, 1, 0, 0, 0)))


def epoch_to_jday(t: np.ndarray, year0: float = YEAR0) -> np.ndarray:
    """Inverse of the CPL convention: 1.0 = 1 Jan 00:00 UTC."""
    return 1.0 + (np.asarray(t, np.float64) - year0) / 86400.0


def flight_arrays(
    n_frames: int = 30, rows: int = 16, cols: int = 20, seed: int = 0, dtype=np.uint16
) -> dict[str, np.ndarray]:
    """A clean flight: one frame per second, one usable CPL profile 0.1 s after each frame."""
    rng = np.random.default_rng(seed)
    frame_t = T0 + np.arange(n_frames, dtype=np.float64)
    signal = (1000 + 200 * rng.random((n_frames, rows, cols))).astype(dtype)
    prof_t = frame_t + 0.1
    m = len(prof_t)
    base = np.full((m, layout.CPL_MAX_LAYERS), layout.CPL_FILL, np.float32)
    base[:, 0] = rng.uniform(0.3, 1.8, m)
    return {
        "signal": signal,
        "frame_time": frame_t,
        "jday": np.stack([epoch_to_jday(prof_t)] * 3, axis=1),  # (M, 3)
        "base": base,
        "lidar_surface_m": rng.uniform(-20, 20, m),
        "dem_surface_m": np.zeros(m),
        "sza": rng.uniform(30, 60, n_frames),
        "saa": rng.uniform(0, 360, n_frames),
    }


def write_flight(
    raw_dir: Path, flight: str = "30Oct24", arrays: dict | None = None
) -> tuple[Path, Path, Path]:
    """Write the three raw files of `flight` under raw_dir/<flight>/ from `arrays`."""
    a = flight_arrays() if arrays is None else arrays
    irai, cpl, nav = flight_paths(raw_dir, flight)
    irai.parent.mkdir(parents=True, exist_ok=True)
    layout.write_irai(irai, a["signal"], a["frame_time"])
    layout.write_cpl(cpl, a["jday"], a["base"], a["lidar_surface_m"], a["dem_surface_m"])
    layout.write_nav(nav, a["sza"], a["saa"])
    return irai, cpl, nav


def truncate(path: Path, keep_fraction: float = 0.5) -> None:
    """Cut a file short, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
