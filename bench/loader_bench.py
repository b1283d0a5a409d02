"""Input pipeline benchmark: the production loader vs a loader written like the research code.

    .venv/bin/python bench/loader_bench.py [--frames 700] [--repeats 3] [--reread-batches 3]

Both loaders deliver augmented (B=20, T=5, 440, 640) batches of the same full-size flight:
- production (cloudml.training.data): the shard is read once into memory; a batch is one
  gather `frames[index[batch]]` plus float-space augmentation;
- reread (the research design; docs/physics.md, 'Preprocessing'):
  for every sample, reopen the raw IRAI HDF5 file,
  read the T frames, swath-slice, flat-field, min-max, CLAHE, z-score — every time. Its flat
  is fitted once up front (in its favour), with exactly ingest's arithmetic, so both loaders
  give bit-identical tensors (tests/test_bench.py).
Prints one JSON line; `run.py` calls `measure` directly.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path)
import h5py
import numpy as np
import torch
from tqdm import tqdm

from cloudml.config import Config, load_config
from cloudml.data import layout, preprocess, raw, timesync
from cloudml.data.ingest import ingest_flight, resolve_files
from cloudml.data.shard import Shard
from cloudml.training.data import Pool, augment, batches, epoch_order, fit_scalers, load_pool
from cloudml.training.loop import gather_batch, scalar_inputs

FLIGHT = "30Oct24"


# --- the research-style loader -------------------------------------------------------------
def raw_windows(frame_time: np.ndarray, shard: Shard) -> np.ndarray:
    """(n, T) raw frame indices of the shard's samples, found from time as the research code
    did: matched frame time = profile time - dt_match_s, nearest raw frame, window around it."""
    centre = timesync.nearest_frame(shard.time_utc - shard.dt_match_s, frame_time)  # (n,)
    return centre[:, None] + timesync.window_offsets(shard.temporal_frames)[None, :]


def flat_like_ingest(info: raw.IraiInfo, factor: int, rows: tuple[int, int]) -> np.ndarray:
    """(H, W) flat fitted from the first 100 good frames, summed block-wise as ingest does
    (same blocks, same float64 order) so the reread loader reproduces ingest's bits."""
    ref_sum, ref_n = None, 0
    for _, blk, bad in raw.iter_irai(info):
        good = np.flatnonzero(~bad)[: preprocess.FLAT_FIELD_FRAMES - ref_n]
        if len(good):
            frames = preprocess.bin_and_slice(blk[good], factor, rows)  # (k, H, W)
            s = frames.sum(axis=0, dtype=np.float64)
            ref_sum = s if ref_sum is None else ref_sum + s
            ref_n += len(good)
        if ref_n >= preprocess.FLAT_FIELD_FRAMES:
            break
    if ref_sum is None:
        raise ValueError(f"{info.path}: no good frame for the flat field")
    return preprocess.fit_flat(ref_sum / ref_n)


@dataclass
class RereadDataset:
    """Research-style dataset: every __getitem__ reopens the IRAI file and redoes the preprocessing
    (docs/physics.md, 'Preprocessing')."""

    irai_path: Path
    windows: np.ndarray  # (n, T) raw frame indices
    factor: int
    rows: tuple[int, int]
    flat: np.ndarray | None  # (H, W) or None without flat-field correction
    clahe_clip_limit: float
    zscore_normalize: bool

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> torch.Tensor:
        """(T, H, W) float32 window of sample i, preprocessed from the raw counts."""
        with h5py.File(self.irai_path, "r") as f:  # reopened for every sample, as researched
            blk = f[layout.IRAI_SIGNAL][self.windows[i]].astype(np.float32)  # (T, R, C)
        frames = preprocess.bin_and_slice(blk, self.factor, self.rows)  # (T, H, W)
        if self.flat is not None:
            preprocess.apply_flat(frames, self.flat)
        for t in range(len(frames)):
            frames[t] = preprocess.normalize_frame(
                frames[t], self.clahe_clip_limit, self.zscore_normalize
            )
        return torch.from_numpy(frames)


def reread_dataset(raw_dir: Path, flight: str, shard: Shard, cfg: Config) -> RereadDataset:
    """The research-style dataset over the same samples as `shard` (same order)."""
    irai_p, _, _ = resolve_files(Path(raw_dir), flight)
    info = raw.check_irai(irai_p)
    d = cfg.data
    factor = preprocess.bin_factor(info.cols, d.scale)
    rows = preprocess.swath_rows(info.rows // factor, d.swath_slice)
    flat = flat_like_ingest(info, factor, rows) if d.flat_field_correction else None
    return RereadDataset(
        irai_p, raw_windows(info.time_utc, shard), factor, rows, flat,
        d.clahe_clip_limit, d.zscore_normalize,
    )  # fmt: skip


# --- one epoch's worth of batches, both ways ----------------------------------------------
def production_batches(
    pool: Pool,
    scalers: dict[str, float],
    batch: int,
    n_batches: int | None,
    seed: int = 0,
    with_augment: bool = True,
) -> int:
    """Deliver augmented batches as cloudml.training.loop.fit does; returns the samples delivered.

    with_augment=False times the gather alone, to show where the loader's time goes."""
    gen = torch.Generator().manual_seed(seed)
    n = 0
    for k, bidx in enumerate(batches(epoch_order(len(pool), None, gen), batch)):
        if n_batches is not None and k >= n_batches:
            break
        b = bidx.numpy()
        x = gather_batch(pool, b)  # (B, T, H, W)
        saa = torch.as_tensor(pool.saa_deg[b])
        if with_augment:
            x, saa = augment(x, saa, gen)
        scalar_inputs(torch.as_tensor(pool.sza_deg[b]), saa, scalers)  # (B, 3)
        n += len(b)
    return n


def reread_batches(
    ds: RereadDataset,
    pool: Pool,
    scalers: dict[str, float],
    batch: int,
    n_batches: int,
    seed: int = 0,
) -> int:
    """Deliver augmented batches the research way (per-sample reread + preprocess)."""
    gen = torch.Generator().manual_seed(seed)
    n = 0
    order = batches(epoch_order(len(ds), None, gen), batch)[:n_batches]
    for bidx in tqdm(order, desc="reread", unit="batch", leave=False):
        b = bidx.numpy()
        x = torch.stack([ds[int(i)] for i in b])  # (B, T, H, W)
        x, saa = augment(x, torch.as_tensor(pool.saa_deg[b]), gen)
        scalar_inputs(torch.as_tensor(pool.sza_deg[b]), saa, scalers)
        n += len(b)
    return n


def rate(fn) -> float:
    """samples/s of one call of fn() -> samples."""
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


def epochs_rate(epoch: Callable[[int], int], seed: int, min_seconds: float) -> float:
    """samples/s of whole epochs `epoch(seed) -> samples` (seeds seed, seed+1000, ...) run
    until min_seconds have passed: a 99-sample epoch takes ~0.1 s, short enough for one
    scheduler hiccup on a shared machine to decide the round."""
    t0, n, k = time.perf_counter(), 0, 0
    while k == 0 or time.perf_counter() - t0 < min_seconds:
        n += epoch(seed + 1000 * k)
        k += 1
    return n / (time.perf_counter() - t0)


def measure(
    raw_dir: Path,
    shard_path: Path,
    cfg: Config,
    repeats: int,
    reread_batches_n: int,
    batch: int = 20,
    min_seconds: float = 1.0,
) -> dict:
    """samples/s of both loaders, `repeats` alternating rounds on the same flight; a
    production round repeats whole epochs for at least `min_seconds`."""
    pool = load_pool({FLIGHT: shard_path}, [FLIGHT], cfg.data.temporal_frames)
    from cloudml.data.shard import read_shard

    shard = read_shard(shard_path)
    ds = reread_dataset(raw_dir, FLIGHT, shard, cfg)
    scalers = fit_scalers(pool.cbh_km, pool.sza_deg)
    prod, rere, gather = [], [], []
    for r in range(repeats):  # interleaved, so both see the same machine load
        prod.append(
            epochs_rate(lambda s: production_batches(pool, scalers, batch, None, s), r, min_seconds)
        )
        gather.append(
            epochs_rate(
                lambda s: production_batches(pool, scalers, batch, None, s, False), r, min_seconds
            )
        )
        rere.append(rate(lambda r=r: reread_batches(ds, pool, scalers, batch, reread_batches_n, r)))
        print(f"loader round {r + 1}: production {prod[-1]:.1f} samples/s, "
              f"reread {rere[-1]:.2f} samples/s", flush=True)  # fmt: skip
    return {
        "production_samples_per_s": prod,
        "reread_samples_per_s": rere,
        "production_no_augment_samples_per_s": gather,
        "n_samples": len(pool),
        "frame_shape": list(pool.frame_shape),
        "temporal_frames": pool.temporal_frames,
        "batch": batch,
        "reread_batches": reread_batches_n,
        "production_min_seconds": min_seconds,
    }


def prepare_flight(tmp: Path, n_frames: int, source: str, cfg: Config) -> tuple[Path, Path]:
    """Raw full-size flight + its shard under tmp; returns (raw_dir, shard_path)."""
    import ingest_bench

    raw_dir = tmp / "raw"
    t0 = time.perf_counter()
    used = ingest_bench.write_flight(raw_dir, source, n_frames)
    shard_path = tmp / f"{FLIGHT}.h5"
    ingest_flight(raw_dir, FLIGHT, shard_path, cfg)
    print(f"loader flight ({used}, {n_frames} frames) written and ingested in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
    return raw_dir, shard_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=700, help="frames of the full-size flight")
    ap.add_argument("--source", choices=("random", "synth", "auto"), default="random")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reread-batches", type=int, default=3)
    ap.add_argument(
        "--min-seconds", type=float, default=1.0, help="least time of one production round"
    )
    args = ap.parse_args(argv)
    cfg = load_config("tuned", {"scale": "full"})
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        raw_dir, shard_path = prepare_flight(Path(tmp), args.frames, args.source, cfg)
        res = measure(
            raw_dir,
            shard_path,
            cfg,
            args.repeats,
            args.reread_batches,
            min_seconds=args.min_seconds,
        )
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
