"""Readers for one flight's raw HDF5 files (IRAI L1B images, CPL L2 layers, nav).

Every reader first checks its file against the layout in docs/physics.md, 'Raw flight files'
(datasets present, ranks, numeric dtypes, lengths that must agree, finite and ordered time
stamps) and only then reads. Any violation is a DataError naming the file, the HDF5 dataset
path and what was expected. Bad *pixels* are not fatal: a frame holding NaN/Inf or the sensor
fill, or one that is a single value throughout (a dead or stuck sensor: no scene in it, and
z-scoring it would divide by a zero spread), is flagged in `bad` and the windows touching it
are dropped later (reason "bad_frame"); ingest warns about constant frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from cloudml.data import layout
from cloudml.data.timesync import cpl_julian_to_epoch
from cloudml.errors import DataError
from cloudml.fileio import check_input_file
from cloudml.flights import year_from_cpl_filename


@dataclass(frozen=True)
class IraiInfo:
    """Layout of a checked IRAI file; the time stamps are small, so they come along."""

    path: Path
    n_frames: int
    rows: int
    cols: int
    dtype: np.dtype
    fill: float | None  # sensor fill value (dataset _FillValue, else the uint max), or None
    time_utc: np.ndarray  # (N,) float64 epoch seconds, strictly increasing


@dataclass
class IraiData:
    signal: np.ndarray  # (N, R, C) float32 raw counts
    time_utc: np.ndarray  # (N,) float64 epoch seconds
    bad: np.ndarray  # (N,) bool: frame holds NaN/Inf or the sensor fill


@dataclass
class CplData:
    time_utc: np.ndarray  # (M,) float64 epoch seconds (julian day + file-name year)
    base_km: np.ndarray  # (M,) float64 layer-0 base altitude, km, fill -9999
    lidar_surface_km: np.ndarray  # (M,) float64, converted from the file's metres
    dem_surface_m: np.ndarray  # (M,) float64 metres
    n_layers: int  # columns of Layer_Base_Altitude
    year: int  # from the file name only
    jday: np.ndarray  # (M,) float64 Profile_Decimal_Julian_Day column 0 as stored


@dataclass
class NavData:
    sza_deg: np.ndarray  # (N,) solar zenith, NaN filled with the flight mean
    saa_deg: np.ndarray  # (N,) solar azimuth on the ground, NaN -> 0, in [0, 360)
    n_sza_filled: int
    n_saa_filled: int


# --- helpers -------------------------------------------------------------------------------
def _open(path: Path) -> h5py.File:
    """Open an HDF5 file read-only; a missing, truncated or corrupt file (or a directory,
    a symlink loop, an unreadable file in its place) is a DataError naming it."""
    path = check_input_file(path)
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {e}") from None


def _dataset(f: h5py.File, path: Path, name: str, ndim: int, what: str) -> h5py.Dataset:
    """The dataset `name`, checked for presence, rank and a real numeric dtype."""
    try:
        obj = f.get(name)
    except (OSError, KeyError) as e:  # a truncated file can fail while walking groups
        raise DataError(f"{path}: {name}: unreadable ({e})") from None
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"{path}: missing dataset {name} (expected {what})")
    if obj.ndim != ndim:
        raise DataError(f"{path}: {name} has rank {obj.ndim} {obj.shape}, expected {what}")
    kind = obj.dtype.kind
    if kind not in "iuf":
        raise DataError(f"{path}: {name} has dtype {obj.dtype}, expected a real numeric type")
    return obj


def _read(ds: h5py.Dataset, path: Path, sel: object = ()) -> np.ndarray:
    """Read `ds[sel]`; an I/O failure (truncated data) becomes a DataError naming the dataset."""
    try:
        return np.asarray(ds[sel])
    except (OSError, ValueError, TypeError) as e:
        raise DataError(f"{path}: {ds.name.lstrip('/')}: cannot read data ({e})") from None


def _check_times(t: np.ndarray, path: Path, name: str, strictly_increasing: bool) -> None:
    bad = ~np.isfinite(t)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: {name} holds {int(bad.sum())} NaN/Inf value(s) (first at index {i}); "
            "expected finite times"
        )
    if strictly_increasing and t.size > 1:
        d = np.diff(t)
        if (d <= 0).any():
            i = int(np.flatnonzero(d <= 0)[0])
            kind = "duplicated" if d[i] == 0 else "non-monotonic"
            raise DataError(
                f"{path}: {name} has {kind} time stamps at index {i}->{i + 1} "
                f"({float(t[i]):.6f} -> {float(t[i + 1]):.6f}); expected strictly increasing times"
            )


# --- IRAI ----------------------------------------------------------------------------------
def check_irai(path: str | Path) -> IraiInfo:
    """Check an IRAI L1B file's layout and time stamps without reading the images."""
    path = Path(path)
    with _open(path) as f:
        sig = _dataset(f, path, layout.IRAI_SIGNAL, 3, "(N frames, rows, cols)")
        tim = _dataset(f, path, layout.IRAI_TIME, 1, "(N,) epoch seconds")
        n, rows, cols = sig.shape
        if tim.shape[0] != n:
            raise DataError(
                f"{path}: {layout.IRAI_TIME} has {tim.shape[0]} entries but "
                f"{layout.IRAI_SIGNAL} has {n} frames; expected one time per frame"
            )
        if n == 0 or rows == 0 or cols == 0:
            raise DataError(f"{path}: {layout.IRAI_SIGNAL} is empty {sig.shape}")
        t = _read(tim, path).astype(np.float64)
        _check_times(t, path, layout.IRAI_TIME, strictly_increasing=True)
        fill = sig.attrs.get("_FillValue")
        if fill is not None:
            fill = float(np.asarray(fill).ravel()[0])
        elif sig.dtype.kind == "u":
            fill = float(np.iinfo(sig.dtype).max)  # the L1B convention for unsigned counts
        return IraiInfo(path, n, rows, cols, sig.dtype, fill, t)


def constant_frames(block: np.ndarray) -> np.ndarray:
    """(k,) bool for a (k, R, C) block: every pixel of the frame has the same finite value
    (a frame of NaN or Inf is bad for that reason, not counted here)."""
    flat = block.reshape(len(block), -1)
    return (flat == flat[:, :1]).all(axis=1) & np.isfinite(flat[:, 0])


def bad_frames(block: np.ndarray, fill: float | None) -> np.ndarray:
    """(k,) bool for a (k, R, C) block: any pixel NaN/Inf or equal to the sensor fill, or
    the frame constant (constant_frames)."""
    flat = block.reshape(len(block), -1)
    bad = ~np.isfinite(flat).all(axis=1) | constant_frames(block)
    if fill is not None:
        bad |= (flat == fill).any(axis=1)
    return bad


def iter_irai(info: IraiInfo, block: int = 64) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (first frame index, (k, R, C) float32 block, (k,) bad flags) over the flight.

    Block-wise so a full-size flight (~1 GB as float32) never has to sit in memory twice.
    """
    with _open(info.path) as f:
        ds = f[layout.IRAI_SIGNAL]
        for start in range(0, info.n_frames, block):
            raw = _read(ds, info.path, np.s_[start : start + block])
            yield start, raw.astype(np.float32), bad_frames(raw, info.fill)


def read_irai(path: str | Path) -> IraiData:
    """All frames of an IRAI file as float32, with time stamps and bad-frame flags."""
    info = check_irai(path)
    signal = np.empty((info.n_frames, info.rows, info.cols), np.float32)  # (N, R, C)
    bad = np.zeros(info.n_frames, bool)
    for start, blk, b in iter_irai(info):
        signal[start : start + len(blk)] = blk
        bad[start : start + len(blk)] = b
    return IraiData(signal, info.time_utc, bad)


# --- CPL -----------------------------------------------------------------------------------
def read_cpl(path: str | Path) -> CplData:
    """Check and read a CPL L2 layer file; profile times converted with the file name's year."""
    path = Path(path)
    year = year_from_cpl_filename(path)  # before any I/O: a bad name fails at once
    with _open(path) as f:
        jd = _dataset(f, path, layout.CPL_JDAY, 2, "(M, 3) decimal julian day, column 0 used")
        base = _dataset(f, path, layout.CPL_BASE, 2, "(M, 10) km, column 0 = label layer")
        surf = _dataset(f, path, layout.CPL_LIDAR_SURF, 1, "(M,) metres")
        dem = _dataset(f, path, layout.CPL_DEM_SURF, 1, "(M,) metres")
        m = jd.shape[0]
        if jd.shape[1] < 1:
            raise DataError(f"{path}: {layout.CPL_JDAY} has no columns, expected (M, 3)")
        if base.shape[1] < 1:
            raise DataError(f"{path}: {layout.CPL_BASE} has no layer columns, expected >= 1")
        for ds in (base, surf, dem):
            if ds.shape[0] != m:
                raise DataError(
                    f"{path}: {ds.name.lstrip('/')} has {ds.shape[0]} profiles but "
                    f"{layout.CPL_JDAY} has {m}; expected one row per profile"
                )
        if m == 0:
            raise DataError(f"{path}: {layout.CPL_JDAY} holds no profiles")
        jday = _read(jd, path, np.s_[:, 0]).astype(np.float64)
        _check_times(jday, path, f"{layout.CPL_JDAY}[:, 0]", strictly_increasing=False)
        base_km = _read(base, path, np.s_[:, 0]).astype(np.float64)
        surface_m = _read(surf, path).astype(np.float64)
        dem_m = _read(dem, path).astype(np.float64)
    return CplData(
        time_utc=cpl_julian_to_epoch(jday, year),
        base_km=base_km,
        lidar_surface_km=surface_m / 1000.0,  # the dataset is in metres
        dem_surface_m=dem_m,
        n_layers=int(base.shape[1]),
        year=year,
        jday=jday,
    )


# --- nav -----------------------------------------------------------------------------------
def clean_nav(sza: np.ndarray, saa: np.ndarray, where: str = "nav") -> NavData:
    """SZA NaN/Inf -> flight mean (all missing: DataError); SAA NaN/Inf -> 0; SAA mod 360."""
    sza = np.asarray(sza, np.float64).copy()
    saa = np.asarray(saa, np.float64).copy()
    bad_z, bad_a = ~np.isfinite(sza), ~np.isfinite(saa)
    if bad_z.all():
        raise DataError(f"{where}: {layout.NAV_SZA} holds no finite value; cannot fill NaNs")
    sza[bad_z] = sza[~bad_z].mean()
    saa[bad_a] = 0.0
    saa = np.mod(saa, 360.0)
    return NavData(sza, saa, int(bad_z.sum()), int(bad_a.sum()))


def read_nav(path: str | Path, n_frames: int) -> NavData:
    """Check and read a nav file: SZA and SAA, one per image frame, NaNs filled."""
    path = Path(path)
    with _open(path) as f:
        arrays = []
        for name in (layout.NAV_SZA, layout.NAV_SAA):
            ds = _dataset(f, path, name, 1, f"({n_frames},) degrees, one per image frame")
            if ds.shape[0] != n_frames:
                raise DataError(
                    f"{path}: {name} has {ds.shape[0]} entries, expected {n_frames} "
                    "(one per IRAI frame)"
                )
            arrays.append(_read(ds, path))
    return clean_nav(arrays[0], arrays[1], where=str(path))
