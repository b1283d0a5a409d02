"""Ingest one flight: raw IRAI/CPL/nav files -> one processed shard (docs/physics.md,
'Raw flight files' to 'Preprocessing').

    cloudml ingest --raw data/raw --flight 30Oct24 --out build/shards/30Oct24.h5 --scale local

All three files are checked against the raw layout before any pixel is read. Profiles are
filtered and matched (cloudml.data.timesync), the frames that some sample window uses are
preprocessed exactly once (cloudml.data.preprocess), and the shard is written atomically:
on any error nothing (not even a temp file) is left at the output path.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cloudml import __version__
from cloudml.config import Config, replace
from cloudml.config_cli import add_config_args, config_from_args
from cloudml.data import layout, preprocess, raw, timesync
from cloudml.data.shard import Shard, write_shard
from cloudml.errors import DataError
from cloudml.fileio import check_input_file, check_output_file, input_problem, sha256_file
from cloudml.flights import flight_paths, get_flight

log = logging.getLogger(__name__)


def resolve_files(raw_dir: Path, flight: str) -> tuple[Path, Path, Path]:
    """(IRAI, CPL, nav) paths under raw_dir/<flight>/.

    The campaign file name is used when present; otherwise exactly one file in the flight
    folder with the same instrument prefix (a re-processed CPL granule carries a new
    version string) is accepted with a warning. A campaign name that exists but is not a
    readable file (a directory, a symlink loop, a dangling link) is reported as such, never
    replaced by a look-alike. Anything else is a DataError naming the missing path.
    """
    f = get_flight(flight)  # ConfigError for an unknown flight
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        problem = input_problem(raw_dir) or "is a file"  # None: a readable plain file
        raise DataError(
            f"{raw_dir}: {problem}; expected the raw directory holding <flight>/ folders"
        )
    canonical = flight_paths(raw_dir, flight)
    folder = canonical[0].parent
    if not folder.is_dir():
        raise DataError(f"{folder}: no folder for flight {flight} in raw directory {raw_dir}")
    prefixes = (f"{f.campaign}_IRAI_L1B_", "CPL_L2_", f"CRS_{f.date}")
    out: list[Path] = []
    for path, prefix in zip(canonical, prefixes, strict=True):
        if os.path.lexists(path):  # there, but maybe a directory, a loop or unreadable
            out.append(check_input_file(path, "raw file"))
            continue
        alike = sorted(folder.glob(f"{prefix}*"))
        if len(alike) != 1:
            found = f" (found {[p.name for p in alike]})" if alike else ""
            raise DataError(f"{path}: missing raw file for flight {flight}{found}")
        log.warning("%s: not found, using %s", path, alike[0].name)
        out.append(check_input_file(alike[0], "raw file"))
    return out[0], out[1], out[2]


def preprocessing_settings(cfg: Config, factor: int, rows: tuple[int, int]) -> dict[str, Any]:
    """The settings that determine a shard's frames and samples (stored with the shard)."""
    d = cfg.data
    return {
        "preprocess_version": preprocess.PREPROCESS_VERSION,
        "temporal_frames": d.temporal_frames,
        "swath_slice": list(d.swath_slice),
        "swath_rows": list(rows),
        "flat_field_correction": d.flat_field_correction,
        "clahe_clip_limit": d.clahe_clip_limit,
        "zscore_normalize": d.zscore_normalize,
        "filter_type": d.filter_type,
        "cbh_range_km": list(d.cbh_range_km),
        "max_dt_s": timesync.MAX_DT_S,
        "scale": d.scale,
        "bin_factor": factor,
    }


class _Stopwatch:
    """Seconds spent per named step since the last lap; a step named twice accumulates."""

    def __init__(self) -> None:
        self.start = self._last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._last
        self._last = now

    def elapsed(self) -> float:
        """Seconds since the stopwatch was made."""
        return time.perf_counter() - self.start


@dataclass
class RawFlight:
    """A flight's three raw files, checked against the layout (IRAI pixels not read yet)."""

    irai_path: Path
    cpl_path: Path
    nav_path: Path
    info: raw.IraiInfo
    cpl: raw.CplData
    nav: raw.NavData


@dataclass
class ImageScan:
    """What the pass over the IRAI images learns besides the candidate frames."""

    bad: np.ndarray  # (N,) bool: the raw frame has a NaN/Inf or sensor-fill pixel, or is constant
    constant: np.ndarray  # (N,) bool: every pixel of the raw frame has one value (dead sensor)
    ref_sum: np.ndarray  # (H, W) float64 sum of the flat-field reference frames
    ref_n: int  # how many frames ref_sum holds


def read_raw_flight(raw_dir: Path, flight: str) -> RawFlight:
    """Resolve and check all three raw files of `flight`, before any pixel is read."""
    irai_p, cpl_p, nav_p = resolve_files(Path(raw_dir), flight)
    info = raw.check_irai(irai_p)
    cpl = raw.read_cpl(cpl_p)
    nav = raw.read_nav(nav_p, info.n_frames)
    rf = RawFlight(irai_p, cpl_p, nav_p, info, cpl, nav)
    check_time_overlap(rf)
    return rf


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def time_spans(rf: RawFlight) -> str:
    """Both instruments' time spans in UTC, for messages about matching."""
    ct, ft = rf.cpl.time_utc, rf.info.time_utc
    return (
        f"CPL profiles {_utc(ct.min())} .. {_utc(ct.max())} UTC, "
        f"IRAI frames {_utc(ft[0])} .. {_utc(ft[-1])} UTC"
    )


def check_time_overlap(rf: RawFlight) -> None:
    """DataError naming both files and both time spans when the CPL profiles and the IRAI
    frames do not overlap in time at all: every profile would be dropped as no_frame, and
    the cause is a wrong file (another flight) or a wrong year in the CPL file name."""
    gap = timesync.span_gap_s(rf.cpl.time_utc, rf.info.time_utc)
    if gap > timesync.MAX_DT_S:
        raise DataError(
            f"{rf.cpl_path} and {rf.irai_path}: the instruments' times do not overlap "
            f"({time_spans(rf)}; {gap:.0f} s apart). Check that the files are of one flight "
            f"and the CPL file name's year ({rf.cpl.year})"
        )


def warn_constant_frames(scan: ImageScan, irai_path: Path) -> None:
    """Warn about constant frames (a dead or stuck sensor); every frame constant is an error."""
    n, total = int(scan.constant.sum()), len(scan.constant)
    if n == total:
        raise DataError(
            f"{irai_path}: {layout.IRAI_SIGNAL}: every one of the {total} frames is a single "
            "value throughout (a dead or stuck sensor?); nothing to learn from"
        )
    if n:
        first = int(np.flatnonzero(scan.constant)[0])
        log.warning(
            "%s: %s: %d of %d frames are a single value throughout (dead or stuck sensor?), "
            "first at index %d; their windows are dropped as bad_frame",
            irai_path, layout.IRAI_SIGNAL, n, total, first,
        )  # fmt: skip


def frame_geometry(rf: RawFlight, cfg: Config) -> tuple[int, tuple[int, int]]:
    """(bin factor, swath rows of the binned frame); a DataError names the IRAI file."""
    d = cfg.data
    factor = preprocess.bin_factor(rf.info.cols, d.scale)
    try:
        rows = preprocess.swath_rows(rf.info.rows // factor, d.swath_slice)
    except DataError as e:
        raise DataError(f"{rf.irai_path}: {layout.IRAI_SIGNAL}: {e}") from None
    return factor, rows


def match_samples(rf: RawFlight, cfg: Config, bad: np.ndarray | None) -> timesync.MatchResult:
    """Filter and match the CPL profiles to the frames (bad=None: bad frames not known yet)."""
    d, cpl = cfg.data, rf.cpl
    return timesync.match_profiles(
        cpl.time_utc, cpl.base_km, cpl.lidar_surface_km, cpl.dem_surface_m,
        rf.info.time_utc, d.cbh_range_km, d.temporal_frames, bad_frame=bad,
    )  # fmt: skip


def read_frames(
    info: raw.IraiInfo,
    candidates: np.ndarray,
    factor: int,
    rows: tuple[int, int],
    flat_field: bool,
) -> tuple[np.ndarray, ImageScan]:
    """One pass over the images: bad flags, flat-field reference, candidate frames kept.

    Returns the (K, H, W) float32 store of the candidate frames (binned, swath-sliced, in
    `candidates` order) and the scan (bad flags, flat-field reference sum).
    """
    h, w = rows[1] - rows[0], info.cols // factor
    store = np.empty((len(candidates), h, w), np.float32)  # (K, H, W) binned + sliced
    bad = np.zeros(info.n_frames, bool)
    constant = np.zeros(info.n_frames, bool)
    ref_sum, ref_n = np.zeros((h, w), np.float64), 0
    for start, blk, b in raw.iter_irai(info):
        stop = start + len(blk)
        bad[start:stop] = b
        constant[start:stop] = raw.constant_frames(blk)
        sel = np.arange(start, stop)
        need = np.isin(sel, candidates)
        take_ref = np.zeros(len(blk), bool)
        if flat_field and ref_n < preprocess.FLAT_FIELD_FRAMES:
            good_idx = np.flatnonzero(~b)[: preprocess.FLAT_FIELD_FRAMES - ref_n]
            take_ref[good_idx] = True
        want = need | take_ref
        if not want.any():
            continue
        frames = preprocess.bin_and_slice(blk[want], factor, rows)  # (k, H, W) = sel[want]
        if take_ref.any():
            ref_sum += frames[take_ref[want]].sum(axis=0, dtype=np.float64)
            ref_n += int(take_ref.sum())
        if need.any():
            store[np.searchsorted(candidates, sel[need])] = frames[need[want]]
    return store, ImageScan(bad, constant, ref_sum, ref_n)


def select_used_frames(
    rf: RawFlight, flight: str, m: timesync.MatchResult, store: np.ndarray, candidates: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(used (F,), frame table (F, H, W), frame_index (n, T)) of the final match.

    Raises a DataError naming the CPL and IRAI files when no sample is left. The candidate
    store is handed over (not copied) when every candidate is used, the usual case.
    """
    if m.n_samples == 0:
        counts = ", ".join(f"{k}={v}" for k, v in m.dropped.items() if v)
        raise DataError(
            f"flight {flight}: no matched samples from {len(rf.cpl.time_utc)} CPL profiles in "
            f"{rf.cpl_path} against {rf.info.n_frames} frames of {rf.irai_path} "
            f"(dropped: {counts or 'none'}; {time_spans(rf)})"
        )
    used = np.unique(m.window)  # (F,) frames some window needs, each processed once
    if len(used) == len(candidates):  # the usual case: no copy of a ~1 GB array
        table = store
    else:
        table = store[np.searchsorted(candidates, used)]  # (F, H, W)
    frame_index = np.searchsorted(used, m.window)  # (n, T) rows of table
    return used, table, frame_index


def apply_flat_field(table: np.ndarray, scan: ImageScan, irai_path: Path) -> None:
    """Fit the flat field to the reference frames and divide it out of `table` in place."""
    if scan.ref_n == 0:
        raise DataError(f"{irai_path}: {layout.IRAI_SIGNAL}: no good frame for the flat field")
    try:
        flat = preprocess.fit_flat(scan.ref_sum / scan.ref_n)
    except DataError as e:
        raise DataError(f"{irai_path}: {layout.IRAI_SIGNAL}: {e}") from None
    preprocess.apply_flat(table, flat)


def normalize_table(table: np.ndarray, cfg: Config) -> None:
    """CLAHE and z-score every frame of `table` in place (a progress bar from 200 frames)."""
    d = cfg.data
    preprocess.normalize_frames(
        table,
        d.clahe_clip_limit,
        d.zscore_normalize,
        progress=len(table) >= 200,
        workers=preprocess.default_workers(),
    )


def shard_summary(
    flight: str,
    rf: RawFlight,
    m: timesync.MatchResult,
    scan: ImageScan,
    table: np.ndarray,
    cfg: Config,
    factor: int,
) -> dict[str, Any]:
    """Counts and shapes of the summary (`table`: the (F, H, W) frames used); the caller
    adds seconds, timings, output path and raw hashes."""
    return {
        "flight": flight,
        "n_samples": m.n_samples,
        "n_frames": int(len(table)),
        "n_raw_frames": rf.info.n_frames,
        "n_profiles": int(len(rf.cpl.time_utc)),
        "n_bad_frames": int(scan.bad.sum()),
        "n_constant_frames": int(scan.constant.sum()),
        "dropped": m.dropped,
        "dt_abs_s": m.dt_abs_s,
        "nav_filled": {"sza": rf.nav.n_sza_filled, "saa": rf.nav.n_saa_filled},
        "scale": cfg.data.scale,
        "bin_factor": factor,
        "frame_shape": list(table.shape[1:]),
        "raw_frame_shape": [rf.info.rows, rf.info.cols],
        "cloudml_version": __version__,
    }


def ingest_flight(raw_dir: Path, flight: str, out_path: Path, cfg: Config) -> dict:
    """Write the processed shard of `flight` to `out_path` atomically; return its summary."""
    sw = _Stopwatch()
    rf = read_raw_flight(raw_dir, flight)  # layout of all three files first
    sw.lap("check")

    factor, rows = frame_geometry(rf, cfg)
    # candidate frames: every window that survives all rules but bad_frame (unknown yet)
    candidates = np.unique(match_samples(rf, cfg, None).window)  # (K,) sorted frame indices
    sw.lap("match")
    store, scan = read_frames(rf.info, candidates, factor, rows, cfg.data.flat_field_correction)
    warn_constant_frames(scan, rf.irai_path)
    sw.lap("read")
    m = match_samples(rf, cfg, scan.bad)
    used, table, frame_index = select_used_frames(rf, flight, m, store, candidates)
    del store
    sw.lap("match")

    if cfg.data.flat_field_correction:
        apply_flat_field(table, scan, rf.irai_path)
    sw.lap("flat_field")
    normalize_table(table, cfg)
    sw.lap("clahe")

    sha = {p.name: sha256_file(p) for p in (rf.irai_path, rf.cpl_path, rf.nav_path)}
    sw.lap("hash")
    summary = shard_summary(flight, rf, m, scan, table, cfg, factor)
    pi, fi = m.profile_idx, m.frame_idx
    shard = Shard(
        flight=flight,
        frame_table=table,
        frame_index=frame_index,
        cbh_km=rf.cpl.base_km[pi],
        sza_deg=rf.nav.sza_deg[fi],
        saa_deg=rf.nav.saa_deg[fi],
        time_utc=rf.cpl.time_utc[pi],
        dt_match_s=m.dt_s,
        config=preprocessing_settings(cfg, factor, rows),
        # stored before the write, so its timings stop at "hash"
        summary={**summary, "seconds": sw.elapsed(), "timings_s": dict(sw.timings)},
        raw_sha256=sha,
    )
    write_shard(out_path, shard)
    sw.lap("write")
    summary.update(
        seconds=sw.elapsed(),
        timings_s={k: round(v, 4) for k, v in sw.timings.items()},
        out_path=str(out_path),
        raw_sha256=sha,
    )
    log.info("ingest %s: %d samples, %d frames -> %s", flight, m.n_samples, len(used), out_path)
    return summary


def format_summary(s: dict) -> str:
    """One screen: samples, drops by reason, |dt| percentiles, time, output."""
    dt = s["dt_abs_s"]
    lines = [
        f"flight {s['flight']}: {s['n_samples']} samples from {s['n_profiles']} CPL profiles, "
        f"{s['n_frames']} of {s['n_raw_frames']} frames used ({s['n_bad_frames']} bad"
        + (f", {n} of them constant" if (n := s.get("n_constant_frames", 0)) else "")
        + "), "
        f"frame {s['frame_shape'][0]}x{s['frame_shape'][1]} (scale {s['scale']}, bin {s['bin_factor']})",
        "dropped: " + ", ".join(f"{k}={v}" for k, v in s["dropped"].items()),
        f"|dt| s: p50={dt['p50']:.3f} p95={dt['p95']:.3f} max={dt['max']:.3f}",
        "seconds: "
        + f"{s['seconds']:.2f} ("
        + ", ".join(f"{k} {v:.2f}" for k, v in s["timings_s"].items())
        + ")",
        f"wrote {s['out_path']}",
    ]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    check_output_file(args.out)  # before any work: a directory or a file in the way
    cfg = config_from_args(args)
    if args.scale:
        cfg = replace(cfg, scale=args.scale)
    summary = ingest_flight(Path(args.raw), args.flight, Path(args.out), cfg)
    print(format_summary(summary))
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="raw flight files -> processed shard (one flight)")
    p.add_argument("--raw", required=True, metavar="DIR",
                   help="raw directory holding <flight>/ folders")  # fmt: skip
    p.add_argument("--flight", required=True, help="flight name, e.g. 30Oct24")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output shard path (.h5), written atomically")  # fmt: skip
    p.add_argument("--scale", choices=("local", "full"), help="override the config's scale")
    p.add_argument("--json", action="store_true", help="also print the full summary as JSON")
    add_config_args(p)
    p.set_defaults(func=_run)
