"""Ingest benchmark: one full-size flight (512x640, ~700 frames) at scale=full and scale=local.

    .venv/bin/python bench/ingest_bench.py [--repeats 3] [--frames 700] [--source auto|synth|random]

Writes the raw flight into a temp dir (the simulator's 30Oct24 at full frame size when
cloudml.data.synth is present, else a plain random-field flight through the layout
writers), times `ingest_flight` several times per scale, and prints the median, the spread
and the share of time in read / flat-field / CLAHE / write. Results: build/bench/ingest.json.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cloudml.config import load_config
from cloudml.data import layout
from cloudml.data.ingest import ingest_flight
from cloudml.flights import flight_paths

FLIGHT = "30Oct24"
SHARE_KEYS = ("read", "flat_field", "clahe", "write")


def write_random_flight(raw_dir: Path, n_frames: int, seed: int = 0) -> None:
    """Full-size random-field flight: vignetting + striping on a smooth scene, 1 Hz CPL."""
    rng = np.random.default_rng(seed)
    rows, cols = layout.FULL_ROWS, layout.FULL_COLS
    y, x = np.mgrid[0:rows, 0:cols]
    r2 = ((y - rows / 2) ** 2 + (x - cols / 2) ** 2) / ((rows / 2) ** 2 + (cols / 2) ** 2)
    sensor = (1 - 0.3 * r2) * (1 + 0.05 * rng.standard_normal(cols))[None, :]  # (R, C)
    signal = np.empty((n_frames, rows, cols), np.uint16)
    coarse = rng.standard_normal((n_frames, rows // 32, cols // 32))  # smooth scene
    for i in range(n_frames):
        scene = np.kron(coarse[i], np.ones((32, 32)))
        noise = rng.standard_normal((rows, cols))
        signal[i] = np.clip((8000 + 800 * scene + 50 * noise) * sensor, 0, 65000)
    t0 = float(calendar.timegm((2024, 10, 30, 18, 0, 0)))
    frame_t = t0 + np.arange(n_frames, dtype=np.float64)
    prof_t = frame_t + rng.normal(0, 0.2, n_frames)
    base = np.full((n_frames, layout.CPL_MAX_LAYERS), layout.CPL_FILL, np.float32)
    base[:, 0] = np.where(rng.random(n_frames) < 0.8, rng.uniform(0.2, 1.9, n_frames), -9999)
    jday = 1 + (prof_t - float(calendar.timegm((2024, 1, 1, 0, 0, 0)))) / 86400
    irai, cpl, nav = flight_paths(raw_dir, FLIGHT)
    irai.parent.mkdir(parents=True, exist_ok=True)
    layout.write_irai(irai, signal, frame_t)
    layout.write_cpl(cpl, np.stack([jday] * 3, 1), base, np.zeros(n_frames), np.zeros(n_frames))
    layout.write_nav(nav, rng.uniform(30, 60, n_frames), rng.uniform(0, 360, n_frames))


def write_flight(raw_dir: Path, source: str, n_frames: int) -> str:
    """The benchmark flight under raw_dir; returns the source actually used."""
    if source in ("auto", "synth"):
        try:
            from cloudml.data import synth
        except ImportError:
            if source == "synth":
                raise
        else:
            synth.write_flight(
                raw_dir, FLIGHT, seed=0, frame_size=(layout.FULL_ROWS, layout.FULL_COLS)
            )
            return "synth"
    write_random_flight(raw_dir, n_frames)
    return "random"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=700, help="frames of the random flight")
    ap.add_argument("--source", choices=("auto", "synth", "random"), default="auto")
    ap.add_argument("--out", default="build/bench/ingest.json")
    args = ap.parse_args(argv)

    results: dict = {"cpus": os.cpu_count(), "repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        raw_dir = Path(tmp) / "raw"
        t = time.perf_counter()
        results["source"] = write_flight(raw_dir, args.source, args.frames)
        print(f"wrote {results['source']} flight in {time.perf_counter() - t:.1f} s", flush=True)
        for scale in ("full", "local"):
            cfg = load_config("tuned", {"scale": scale})
            runs = []
            for rep in range(args.repeats):
                s = ingest_flight(raw_dir, FLIGHT, Path(tmp) / f"{scale}.h5", cfg)
                runs.append(s)
                print(f"{scale} run {rep + 1}: {s['seconds']:.2f} s {s['timings_s']}", flush=True)
            secs = [r["seconds"] for r in runs]
            med = runs[secs.index(sorted(secs)[len(secs) // 2])]
            share = {k: med["timings_s"].get(k, 0.0) / med["seconds"] for k in SHARE_KEYS}
            share["other"] = 1.0 - sum(share.values())
            results[scale] = {
                "median_s": statistics.median(secs),
                "min_s": min(secs),
                "max_s": max(secs),
                "runs_s": secs,
                "share": share,
                "timings_s_median_run": med["timings_s"],
                "n_raw_frames": med["n_raw_frames"],
                "raw_frame_shape": med["raw_frame_shape"],
                "n_frames": med["n_frames"],
                "n_samples": med["n_samples"],
                "frame_shape": med["frame_shape"],
                "shard_mb": (Path(tmp) / f"{scale}.h5").stat().st_size / 1e6,
            }
    for scale in ("full", "local"):
        r = results[scale]
        shares = " ".join(f"{k} {v:.0%}" for k, v in r["share"].items())
        print(
            f"{scale:5s}: median {r['median_s']:.2f} s (min {r['min_s']:.2f}, max {r['max_s']:.2f}) "
            f"over {args.repeats}; {r['n_raw_frames']} frames {r['raw_frame_shape']} -> "
            f"{r['n_frames']} x {r['frame_shape']}, {r['n_samples']} samples; {shares}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
