"""Training data in memory: flights' frame tables as one tensor, windows gathered per batch,
time-ordered splits, scalers fitted on training samples, float-space augmentation.

Nothing here reads HDF5 per sample: `load_pool` reads each shard once, and a batch is one
fancy-index `frames[index[batch]]` (B, T, H, W).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import torch

from cloudml.data.shard import Shard, read_shard
from cloudml.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Pool:
    """Samples of one or more flights; frame tables concatenated once, indices offset."""

    flights: list[str]
    frames: torch.Tensor  # (F, H, W) float32, every flight's frame table back to back
    index: torch.Tensor  # (n, T) int64 rows of `frames` per sample
    cbh_km: np.ndarray  # (n,)
    sza_deg: np.ndarray  # (n,)
    saa_deg: np.ndarray  # (n,)
    time_utc: np.ndarray  # (n,)
    flight_code: np.ndarray  # (n,) position in `flights`
    local_idx: np.ndarray  # (n,) sample number inside its own shard

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return (int(self.frames.shape[1]), int(self.frames.shape[2]))

    @property
    def temporal_frames(self) -> int:
        return int(self.index.shape[1])

    def sample_ids(self, idx: np.ndarray) -> list[tuple[str, int]]:
        """(flight, index in its shard) of each sample: the identity tests track."""
        return [(self.flights[self.flight_code[i]], int(self.local_idx[i])) for i in idx]

    def of_flight(self, flight: str) -> np.ndarray:
        """Sample indices of `flight`."""
        return np.flatnonzero(self.flight_code == self.flights.index(flight))


def shard_flight(path: Path) -> str:
    """The flight a shard holds, read from its attributes (no array is loaded)."""
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs["flight"])
    except (OSError, KeyError) as e:
        raise DataError(f"{path}: not a shard with a 'flight' attribute ({e})") from None


def shards_from_paths(paths: list[str]) -> dict[str, Path]:
    """{flight: path} from shard files, the flight read from each file."""
    out: dict[str, Path] = {}
    for p in map(Path, paths):
        flight = shard_flight(p)
        if flight in out:
            raise DataError(f"{p}: flight {flight} already given by {out[flight]}")
        out[flight] = p
    return out


def load_pool(shards: dict[str, Path | Shard], flights: list[str], temporal_frames: int) -> Pool:
    """Read the shards of `flights` once into a Pool; checks flight names and window length.
    A value that is already a Shard is used as it is (evaluate reads the validation shard
    once for the pool and the baseline); a single flight's frames are not copied."""
    parts, offset = [], 0
    for code, name in enumerate(flights):
        if name not in shards:
            raise DataError(f"no shard given for flight {name} (got: {', '.join(sorted(shards))})")
        given = shards[name]
        if isinstance(given, Shard):
            s, path = given, f"shard of {given.flight}"
        else:
            path = Path(given)
            s = read_shard(path)
        if s.flight != name:
            raise DataError(f"{path}: holds flight {s.flight!r}, expected {name!r}")
        if s.temporal_frames != temporal_frames:
            raise DataError(
                f"{path}: frame_index has {s.temporal_frames} frames per sample, "
                f"config temporal_frames is {temporal_frames}"
            )
        if parts and s.frame_shape != tuple(parts[0][0].shape[1:]):
            raise DataError(
                f"{path}: frames are {s.frame_shape}, other shards {parts[0][0].shape[1:]}"
            )
        n = len(s)
        parts.append((s.frame_table, s.frame_index + offset, s, np.full(n, code), np.arange(n)))
        offset += s.frame_table.shape[0]
        log.info(
            "loaded %s: %d samples, %d frames of %dx%d",
            path,
            n,
            s.frame_table.shape[0],
            *s.frame_shape,
        )

    def cat(xs: list[np.ndarray]) -> np.ndarray:
        return xs[0] if len(xs) == 1 else np.concatenate(xs)

    return Pool(
        flights=list(flights),
        frames=torch.from_numpy(cat([p[0] for p in parts]).astype(np.float32, copy=False)),
        index=torch.from_numpy(cat([p[1] for p in parts]).astype(np.int64)),
        cbh_km=cat([p[2].cbh_km for p in parts]).astype(np.float64),
        sza_deg=cat([p[2].sza_deg for p in parts]).astype(np.float64),
        saa_deg=cat([p[2].saa_deg for p in parts]).astype(np.float64),
        time_utc=cat([p[2].time_utc for p in parts]).astype(np.float64),
        flight_code=cat([p[3] for p in parts]).astype(np.int64),
        local_idx=cat([p[4] for p in parts]).astype(np.int64),
    )


def time_split(time_utc: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Time-ordered split: (earliest 1-val_fraction, latest val_fraction) sample indices.

    A random split would put near-duplicate neighbouring frames on both sides.
    """
    order = np.argsort(time_utc, kind="stable")
    n_val = int(round(len(order) * val_fraction))
    if len(order) - n_val < 2 or n_val < 1:
        raise DataError(
            f"{len(order)} samples cannot be split {1 - val_fraction:.2f}/{val_fraction:.2f}"
        )
    return order[: len(order) - n_val], order[len(order) - n_val :]


def fit_scalers(cbh_km: np.ndarray, sza_deg: np.ndarray) -> dict[str, float]:
    """Mean/std of target and SZA over TRAINING samples only (stored in the checkpoint).
    SAA enters as sin/cos (unit scale), so it needs no fitted statistics."""
    return {
        "cbh_mean": float(np.mean(cbh_km)),
        "cbh_std": float(max(np.std(cbh_km), 1e-6)),
        "sza_mean": float(np.mean(sza_deg)),
        "sza_std": float(max(np.std(sza_deg), 1e-6)),
    }


def epoch_order(n: int, weights: np.ndarray | None, gen: torch.Generator) -> torch.Tensor:
    """Sample order for one epoch: a permutation, or n weighted draws with replacement."""
    if weights is None:
        return torch.randperm(n, generator=gen)
    w = torch.as_tensor(weights, dtype=torch.float64)
    return torch.multinomial(w, n, replacement=True, generator=gen)


def batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split an order into batches; a trailing batch of one is dropped (BatchNorm needs two)."""
    out = list(order.split(batch_size))
    if out and len(out[-1]) < 2:
        out.pop()
    return out


def augment(
    frames: torch.Tensor,
    saa_deg: torch.Tensor,
    gen: torch.Generator,
    jitter: float = 0.2,
    p_erase: float = 0.5,
    p_flip: float = 0.5,
    p_vflip: float = 0.5,
    p_transpose: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time augmentation in the normalised float space (never via 8-bit images).

    frames (B, T, H, W), saa_deg (B,). Per sample, same for all T frames (the frames of a
    window are one scene seen over time):
    - contrast x(1 +- jitter) and brightness +- jitter (z-score units);
    - random erasing (p_erase) of a rectangle of 2-15% of the frame, set to 0 (the mean);
    - mirror (p_flip) of the cross-track axis. Rows are along-track (the swath slice acts on
      rows), columns cross-track; nadir is the centre column, so parallax stays symmetric.
      SAA is measured clockwise from the aircraft heading: the sun direction in (along,
      cross-right) is (cos a, sin a); mirroring cross-track gives (cos a, -sin a), i.e.
      azimuth -a = 360 - a. So the mirrored sample gets SAA' = (360 - SAA) mod 360.
    - mirror (p_vflip, independent) of the along-track axis together with reversed frame
      order: the same scene flown on the opposite heading. The sun direction becomes
      (-cos a, sin a), azimuth 180 - a, so SAA' = (180 - SAA) mod 360; both mirrors together
      are a 180 deg rotation, SAA' = SAA + 180. Relief displacement is symmetric about the
      frame centre on both axes, and reversing time keeps the scene moving towards the
      aircraft's tail, so every transformed sample is one the sensor could have recorded.
      Legs give each flight a few SAA values only; the mirrors give the model all four
      reflections of each, so the shadow direction it learns generalises to unseen legs.
    - transpose (p_transpose, one draw per BATCH, so a batch keeps one frame shape): rows and
      columns swap, (B, T, H, W) -> (B, T, W, H). In (row, col) with row 0 forward the ray
      towards the sun runs along (-cos a, sin a); swapped it runs along (sin a, -cos a) =
      (-cos a', sin a') with a' = 270 - a, so SAA' = (270 - SAA) mod 360. With the mirrors
      this is the whole symmetry group of the rectangle's pixel grid (8 orientations). The
      motion between the window's frames then runs across the frame: 800 m from the first to
      the last of 5 frames, ~1.6 px at the local ~500 m, against the several-pixel shadow
      offsets the label is read from.
    """
    if frames.device.type != "cpu":  # fit augments on the host; elsewhere make the round trip
        x, saa = augment(frames.cpu(), saa_deg, gen, jitter, p_erase, p_flip, p_vflip, p_transpose)
        return x.to(frames.device), saa
    b, _, h, w = frames.shape
    d = _draw(gen, b, h, w, jitter, p_erase, p_flip, p_vflip)
    out = _apply(frames, d)
    saa = torch.where(d.flip.to(saa_deg.device), torch.remainder(360.0 - saa_deg, 360.0), saa_deg)
    saa = torch.where(d.vflip.to(saa.device), torch.remainder(180.0 - saa, 360.0), saa)
    # the transposition is drawn last: the draws above replay whatever p_transpose is
    if p_transpose > 0 and bool(torch.rand(1, generator=gen) < p_transpose):
        out = out.transpose(-1, -2).contiguous()
        saa = torch.remainder(270.0 - saa, 360.0)
    return out, saa


class _Draws(NamedTuple):
    """One batch's augmentation parameters, per sample."""

    contrast: torch.Tensor  # (B, 1, 1, 1)
    bright: torch.Tensor  # (B, 1, 1, 1)
    rect: list[list[int]]  # (B, 4) erased rows r0:r1, columns c0:c1
    erase: torch.Tensor  # (B,) bool
    flip: torch.Tensor  # (B,) bool, cross-track mirror
    vflip: torch.Tensor  # (B,) bool, along-track mirror + reversed frame order


def _draw(
    gen: torch.Generator,
    b: int,
    h: int,
    w: int,
    jitter: float,
    p_erase: float,
    p_flip: float,
    p_vflip: float,
) -> _Draws:
    """The random draws of `augment` for b samples of h x w frames."""

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen)

    # the draws, in the order and shapes they have always had (a seed replays an epoch)
    contrast = 1.0 + jitter * (2 * u(b, 1, 1, 1) - 1)  # (B, 1, 1, 1)
    bright = jitter * (2 * u(b, 1, 1, 1) - 1)  # (B, 1, 1, 1)
    area = (0.02 + 0.13 * u(b)) * h * w
    aspect = torch.exp((u(b) - 0.5) * 1.2)  # ~0.55..1.8
    eh = (area * aspect).sqrt().clamp(1, h)
    ew = (area / aspect).sqrt().clamp(1, w)
    y0 = (u(b) * (h - eh + 1)).floor()
    x0 = (u(b) * (w - ew + 1)).floor()
    erase = u(b) < p_erase  # (B,)
    flip = u(b) < p_flip  # (B,)
    vflip = u(b) < p_vflip  # (B,)
    rect = torch.stack([y0, y0 + eh.floor(), x0, x0 + ew.floor()], 1).long().tolist()  # (B, 4)
    return _Draws(contrast, bright, rect, erase, flip, vflip)


def _apply(frames: torch.Tensor, d: _Draws) -> torch.Tensor:
    """frames (B, T, H, W) with contrast, brightness, erasing and both mirrors of `d` applied
    (a new tensor; `frames` is left alone)."""
    # Applied frame by frame with numpy: a mirror is then a view (negative strides, no copy)
    # and each frame is read and written once, its second step running in cache, instead of
    # several passes over the whole (B, T, H, W) batch. numpy ufuncs are single-threaded: on
    # the 2 shared cores under load, each OpenMP fork/join of a torch op cost ~12 ms (measured),
    # which made the same loop in torch ops 10x slower than the whole-batch code. Mirroring the
    # input and mapping the erased rectangle through the mirrors gives the same bits as
    # erasing first and mirroring after; mul and add stay two roundings (no fused FMA).
    _, t, h, w = frames.shape
    dtype = torch.result_type(frames, d.contrast)  # as `frames * contrast` promotes
    out = torch.empty(frames.shape, dtype=dtype)
    src_all = frames.detach().to(dtype).numpy()  # (B, T, H, W), a view when already dtype
    dst_all, c_all, a_all = out.numpy(), d.contrast.numpy(), d.bright.numpy()
    for i, (ers, fl, vf, (r0, r1, c0, c1)) in enumerate(
        zip(d.erase.tolist(), d.flip.tolist(), d.vflip.tolist(), d.rect, strict=True)
    ):
        src = src_all[i, ::-1, ::-1] if vf else src_all[i]  # frame order and rows
        src = src[..., ::-1] if fl else src  # columns
        for k in range(t):
            np.multiply(src[k], c_all[i, 0], out=dst_all[i, k])  # (H, W) * (1, 1)
            np.add(dst_all[i, k], a_all[i, 0], out=dst_all[i, k])
        if ers:
            r0, r1 = (h - r1, h - r0) if vf else (r0, r1)
            c0, c1 = (w - c1, w - c0) if fl else (c0, c1)
            dst_all[i, :, max(r0, 0) : r1, max(c0, 0) : c1] = 0.0
    return out
