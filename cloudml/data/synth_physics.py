"""Pure numpy building blocks of the synthetic scene (cloudml.data.synth): random fields and
series, cloud and shadow optical depth, vignetting, the view of the ground from the aircraft,
and the time conversions of the raw files. No I/O, no flight parameters."""

from __future__ import annotations

import calendar

import numpy as np
from scipy import ndimage, special


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


def utc_epoch(date: str, hhmmss: str) -> float:
    """Epoch seconds of "YYYYMMDD" at "HH:MM:SS" UTC."""
    h, m, s = (int(v) for v in hhmmss.split(":"))
    return float(calendar.timegm((int(date[:4]), int(date[4:6]), int(date[6:]), h, m, s)))


def day_of_year(epoch_s: np.ndarray, year: int) -> np.ndarray:
    """(M,) epoch seconds -> decimal day of year, 1.0 = 1 Jan 00:00 UTC (CPL convention)."""
    return 1.0 + (epoch_s - calendar.timegm((year, 1, 1, 0, 0, 0))) / 86400.0
