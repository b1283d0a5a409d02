"""Frame preprocessing applied once per flight at ingest (docs/physics.md, 'Preprocessing').
Pure array functions.

Order: (scale=local) area-average binning -> swath slice -> flat field (vignetting and
column striping) -> per-frame median rescale -> per frame min-max to [0, 1] -> CLAHE ->
optional z-score. Ingest calls `normalize_frames` on the *unique* frames used by any
sample window, so overlapping windows never process a frame twice.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from skimage.exposure import equalize_adapthist
from tqdm import tqdm

from cloudml.data.layout import FULL_ROWS
from cloudml.errors import DataError

LOCAL_COLS = 32  # scale=local bins frames down to about this width (640 -> 32: factor 20)
FLAT_FIELD_FRAMES = 100
# bumped whenever the same settings would produce different frames; stored in every shard
# (2: CLAHE bins matched to the tile size, see clahe_bins)
PREPROCESS_VERSION = 2


def bin_factor(cols: int, scale: str) -> int:
    """Integer area-average factor: `local` -> max(1, cols // LOCAL_COLS); `full` -> 1."""
    return max(1, cols // LOCAL_COLS) if scale == "local" else 1


def bin_frames(frames: np.ndarray, factor: int) -> np.ndarray:
    """(k, R, C) -> (k, R // f, C // f) float32 area average of f x f blocks.

    Trailing rows/cols that do not fill a block are cut (none for 512x640 with f=16).
    """
    frames = np.asarray(frames, np.float32)
    if factor == 1:
        return frames
    k, r, c = frames.shape
    rr, cc = r // factor, c // factor
    blocks = frames[:, : rr * factor, : cc * factor].reshape(k, rr, factor, cc, factor)
    return blocks.mean(axis=(2, 4), dtype=np.float64).astype(np.float32)  # (k, rr, cc)


def swath_rows(rows: int, swath_slice: tuple[int, int]) -> tuple[int, int]:
    """Row range kept from a frame of `rows` rows; swath_slice is in 512-row full-frame units.

    Rounded half up, so it does not depend on banker's rounding: [40, 480] of 32 rows -> 3:30.
    """
    a, b = swath_slice
    lo, hi = (int(math.floor(v * rows / FULL_ROWS + 0.5)) for v in (a, b))
    if not 0 <= lo < hi <= rows:
        raise DataError(f"swath_slice {list(swath_slice)} leaves no rows of a {rows}-row frame")
    return lo, hi


def bin_and_slice(frames: np.ndarray, factor: int, rows: tuple[int, int]) -> np.ndarray:
    """(k, R, C) raw -> (k, H, W) float32: bin first (full-frame geometry), then swath-slice."""
    binned = bin_frames(frames, factor)
    return np.ascontiguousarray(binned[:, rows[0] : rows[1]])


# --- flat field ----------------------------------------------------------------------------
def flat_reference(frames: np.ndarray, good: np.ndarray, n: int = FLAT_FIELD_FRAMES) -> np.ndarray:
    """(H, W) mean of the first `n` good frames of (k, H, W) `frames` (time order)."""
    idx = np.flatnonzero(np.asarray(good, bool))[:n]
    if len(idx) == 0:
        raise DataError("flat field: no good frame to build the reference from")
    return frames[idx].mean(axis=0, dtype=np.float64)


def radius2(shape: tuple[int, int]) -> np.ndarray:
    """(H, W) squared radius from the frame centre, normalised to 1 at the corners."""
    h, w = shape
    y = np.arange(h) - (h - 1) / 2.0
    x = np.arange(w) - (w - 1) / 2.0
    r2 = y[:, None] ** 2 + x[None, :] ** 2
    return r2 / max(r2.max(), 1e-12)


def fit_flat(reference: np.ndarray, iterations: int = 3) -> np.ndarray:
    """(H, W) mean-1 sensor flat = radial vignetting V(r) x column striping s(c).

    V = a + b r^2 is a least-squares fit to the reference (with striping divided out) and
    s(c) is the per-column median of reference / V. Keeping only these two sensor terms,
    rather than dividing by the raw 100-frame mean, removes vignetting and the fixed
    striping without imprinting the clouds that happened to be in the first 100 frames.
    """
    ref = np.asarray(reference, np.float64)
    if not np.isfinite(ref).all() or ref.mean() <= 0:
        raise DataError("flat field: reference frame must be finite with a positive mean")
    r2 = radius2(ref.shape).ravel()
    design = np.stack([np.ones_like(r2), r2], axis=1)  # (H*W, 2)
    stripe = np.ones(ref.shape[1])
    for _ in range(iterations):
        coef, *_ = np.linalg.lstsq(design, (ref / stripe[None, :]).ravel(), rcond=None)
        vig = (design @ coef).reshape(ref.shape)  # (H, W)
        if (vig <= 0).any():
            raise DataError("flat field: fitted vignetting surface is not positive")
        stripe = np.median(ref / vig, axis=0)  # (W,)
        stripe = stripe / stripe.mean()
    flat = vig * stripe[None, :]
    return (flat / flat.mean()).astype(np.float32)


def apply_flat(frames: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Divide (k, H, W) frames by the flat, then rescale each by its median (in place).

    The median rescale removes per-frame gain drift; min-max later makes scale moot anyway.
    """
    frames /= flat[None]
    med = np.median(frames.reshape(len(frames), -1), axis=1)  # (k,)
    med[~np.isfinite(med) | (med == 0)] = 1.0
    frames /= med[:, None, None].astype(np.float32)
    return frames


# --- per frame -----------------------------------------------------------------------------
def minmax(frame: np.ndarray) -> np.ndarray:
    """(H, W) -> [0, 1]; a constant frame becomes zeros."""
    lo, hi = float(frame.min()), float(frame.max())
    if hi <= lo:
        return np.zeros(frame.shape, np.float64)
    return (frame.astype(np.float64) - lo) / (hi - lo)


def zscore(frame: np.ndarray) -> np.ndarray:
    """(H, W) -> mean 0, sd 1; a constant frame becomes zeros (no NaN)."""
    sd = float(frame.std())
    if sd == 0.0 or not math.isfinite(sd):
        return np.zeros(frame.shape, np.float64)
    return (frame - frame.mean()) / sd


CLAHE_BINS = 256  # skimage's default histogram resolution, kept at full size


def clahe_bins(shape: tuple[int, int], clip_limit: float, nbins: int = CLAHE_BINS) -> int:
    """Histogram bins that keep CLAHE's contrast-slope limit independent of the tile size.

    skimage clips each tile's histogram at clim = max(1, int(clip_limit * tile_pixels))
    counts, so the steepest mapping slope is clim / (tile_pixels / nbins) = clip_limit * nbins
    only while clip_limit * tile_pixels >= 1. A full frame (tiles of 55x80 px: clim 44)
    meets that; a `local` frame of 27x40 has 3x5-pixel tiles, clim rounds up to 1 and the
    slope limit rises from 2.56 to 17: CLAHE becomes a per-tile rank transform that turns the
    sea's 0.1 K texture into full-contrast noise and buries the cloud shadows. Fewer bins
    restore the slope limit: nbins' = clip_limit * nbins * tile_pixels / clim. Full-size
    frames get exactly `nbins`. Measured on synthetic 12Feb25 frames (full size, then 16x16
    area-averaged, vs binned first): correlation with the binned full-size result 0.86 with
    256 bins, 0.98 with the 38 this gives for 27x40.
    """
    if clip_limit <= 0:
        return nbins
    tile = max(shape[0] // 8, 1) * max(shape[1] // 8, 1)  # skimage's default kernel_size
    clim = max(1, int(clip_limit * tile))
    return int(min(nbins, max(2, round(clip_limit * nbins * tile / clim))))


def normalize_frame(
    frame: np.ndarray, clahe_clip_limit: float, zscore_normalize: bool
) -> np.ndarray:
    """One (H, W) frame: min-max to [0, 1], CLAHE (clip 0 skips it), optional z-score."""
    x = minmax(frame)
    if clahe_clip_limit > 0:
        x = equalize_adapthist(
            np.clip(x, 0.0, 1.0),
            clip_limit=clahe_clip_limit,
            nbins=clahe_bins(x.shape, clahe_clip_limit),
        )
    if zscore_normalize:
        x = zscore(x)
    return x.astype(np.float32)


def default_workers() -> int:
    """Threads for per-frame work: the CPUs this process may use, at most 4.

    CLAHE spends its time in numpy calls that release the GIL, so threads scale.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def normalize_frames(
    frames: np.ndarray,
    clahe_clip_limit: float,
    zscore_normalize: bool,
    progress: bool = False,
    workers: int = 1,
) -> np.ndarray:
    """Apply `normalize_frame` to each (H, W) frame of (F, H, W), in place; returns frames.

    Each frame is processed exactly once; with workers > 1 frames run on a thread pool.
    """

    def one(i: int) -> None:
        frames[i] = normalize_frame(frames[i], clahe_clip_limit, zscore_normalize)

    with tqdm(
        total=len(frames), desc="normalize", unit="frame", leave=False, disable=not progress
    ) as bar:
        if workers <= 1:
            for i in range(len(frames)):
                one(i)
                bar.update()
        else:
            with ThreadPoolExecutor(workers) as ex:
                for _ in ex.map(one, range(len(frames))):
                    bar.update()
    return frames
