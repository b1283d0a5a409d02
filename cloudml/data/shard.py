"""Processed flight shard: the ready tensors ingest writes once and training reads.

One HDF5 file per flight. Overlapping temporal windows share frames, so each preprocessed
frame is stored once in `frame_table` (F, H, W) and `frame_index` (n, T) says which frames
make up each sample's window; `frames` (n, T, H, W) is an HDF5 *virtual* dataset over the
table, so tools that expect one array per sample see one, at no extra disk cost.

Datasets: frames, frame_table, frame_index, cbh_km, sza_deg, saa_deg, time_utc, dt_match_s.
Attributes: flight, format_version, cloudml_version, and JSON strings `config` (the
preprocessing settings), `summary` (counts kept/dropped by reason, timings) and
`raw_sha256` ({file name: sha256}).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cloudml import __version__
from cloudml.errors import DataError
from cloudml.fileio import atomic_path

FORMAT_VERSION = 1
PER_SAMPLE = ("cbh_km", "sza_deg", "saa_deg", "time_utc", "dt_match_s")
JSON_ATTRS = ("config", "summary", "raw_sha256")


@dataclass
class Shard:
    flight: str
    frame_table: np.ndarray  # (F, H, W) float32, preprocessed frames, each stored once
    frame_index: np.ndarray  # (n, T) int32 rows of frame_table per sample, time order
    cbh_km: np.ndarray  # (n,) label: CPL layer-0 base, km
    sza_deg: np.ndarray  # (n,) solar zenith at the centre frame
    saa_deg: np.ndarray  # (n,) solar azimuth at the centre frame, [0, 360)
    time_utc: np.ndarray  # (n,) epoch seconds of the CPL profile
    dt_match_s: np.ndarray  # (n,) profile time - matched frame time
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    raw_sha256: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frame_index.shape[0])

    @property
    def temporal_frames(self) -> int:
        return int(self.frame_index.shape[1])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.frame_table.shape[1:])  # type: ignore[return-value]

    def windows(self, idx: np.ndarray | slice | None = None) -> np.ndarray:
        """Sample windows (k, T, H, W) gathered from the frame table."""
        fi = self.frame_index if idx is None else self.frame_index[idx]
        return self.frame_table[fi]

    def check(self, where: str = "shard") -> None:
        """Raise DataError unless shapes and values are consistent."""
        n = len(self)
        if self.frame_table.ndim != 3:
            raise DataError(f"{where}: frame_table must be (F, H, W), got {self.frame_table.shape}")
        if self.frame_index.ndim != 2:
            raise DataError(f"{where}: frame_index must be (n, T), got {self.frame_index.shape}")
        for name in PER_SAMPLE:
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise DataError(f"{where}: {name} must have shape ({n},), got {arr.shape}")
        if n and (self.frame_index.min() < 0 or self.frame_index.max() >= len(self.frame_table)):
            raise DataError(f"{where}: frame_index points outside frame_table")
        if not np.isfinite(self.frame_table).all():
            raise DataError(f"{where}: frame_table holds NaN or Inf")
        if not np.isfinite(self.cbh_km).all():
            raise DataError(f"{where}: cbh_km holds NaN or Inf")


def write_shard(path: str | Path, shard: Shard) -> Path:
    """Write `shard` atomically: a failure leaves no file at `path`."""
    shard.check(f"shard for {shard.flight}")
    path = Path(path)
    n, t = shard.frame_index.shape
    f_count, h, w = shard.frame_table.shape
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset(
                "frame_table",
                data=shard.frame_table.astype(np.float32, copy=False),
                chunks=(1, h, w) if f_count else None,
            )
            f.create_dataset("frame_index", data=shard.frame_index.astype(np.int32, copy=False))
            layout = h5py.VirtualLayout(shape=(n, t, h, w), dtype="f4")
            src = h5py.VirtualSource(".", "frame_table", shape=(f_count, h, w))
            for i, row in enumerate(shard.frame_index):
                for j, k in enumerate(row):
                    layout[i, j] = src[int(k)]
            f.create_virtual_dataset("frames", layout)
            for name in PER_SAMPLE:
                f.create_dataset(name, data=np.asarray(getattr(shard, name), dtype=np.float64))
            f.attrs["flight"] = shard.flight
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["cloudml_version"] = __version__
            for name in JSON_ATTRS:
                f.attrs[name] = json.dumps(getattr(shard, name), sort_keys=True)
    return path


def read_shard(path: str | Path) -> Shard:
    """Load a shard written by `write_shard`, checking its layout; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: shard file does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 shard ({e})") from None
    with f:
        missing = [d for d in ("frame_table", "frame_index", *PER_SAMPLE) if d not in f]
        if missing:
            raise DataError(f"{path}: shard is missing dataset(s) {missing}")
        version = int(f.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise DataError(f"{path}: shard format_version {version}, expected {FORMAT_VERSION}")
        try:
            attrs = {name: json.loads(f.attrs.get(name, "{}")) for name in JSON_ATTRS}
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: corrupt JSON attribute ({e})") from None
        shard = Shard(
            flight=str(f.attrs.get("flight", "")),
            frame_table=f["frame_table"][()].astype(np.float32, copy=False),
            frame_index=f["frame_index"][()].astype(np.int64, copy=False),
            **{name: f[name][()] for name in PER_SAMPLE},
            **attrs,
        )
    shard.check(str(path))
    return shard
