"""Tiny in-memory shards for the training/evaluation tests (no ingest, no simulator).

The label is written into the frames as a V-shaped row profile scaled by the cloud base,
so a model can learn it (a positive control) and a shuffled copy of the labels cannot. The
profile is constant across columns and symmetric in rows, so both mirror augmentations
(cross-track, and along-track with reversed frame order) keep it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cloudml.config import load_config
from cloudml.data.shard import Shard, write_shard

# small, fast settings every training test starts from (preset values stay in the presets)
FAST = {
    "memory_optimized": True,
    "temporal_frames": 3,
    "warmup_steps": 4,
    "learning_rate": 0.003,
    "batch_size": 16,
    "epochs": 3,
    "torch_compile": False,
}


def fast_cfg(**changes):
    return load_config("tuned", {**FAST, **changes})


def make_shard(
    flight: str, n: int = 60, t: int = 3, h: int = 8, w: int = 10, seed: int = 0, t0: float = 1.73e9
) -> Shard:
    """n samples over n + t - 1 consecutive frames; label = the centre frame's cloud base."""
    rng = np.random.default_rng(seed)
    f_count = n + t - 1
    base = 1.0 + 0.5 * np.sin(np.arange(f_count) / 5.0 + seed) + rng.normal(0, 0.1, f_count)
    v = np.abs(np.linspace(-1, 1, h, dtype=np.float32))  # (h,) symmetric in rows
    grad = (v - v.mean())[:, None] * np.ones((1, w), np.float32) * 2.0  # (h, w)
    frames = (
        rng.normal(0, 0.3, (f_count, h, w)).astype(np.float32)
        + (base[:, None, None] - 1.0).astype(np.float32) * 2.0 * grad
    )
    idx = np.arange(n)[:, None] + np.arange(t)[None, :]
    return Shard(
        flight=flight,
        frame_table=frames,
        frame_index=idx,
        cbh_km=base[idx[:, t // 2]],
        sza_deg=rng.uniform(30, 70, n),
        saa_deg=rng.uniform(0, 360, n),
        time_utc=t0 + np.arange(n, dtype=float),
        dt_match_s=rng.uniform(-0.5, 0.5, n),
    )


def write_shards(tmp: Path, flights: list[str], **kw) -> dict[str, Path]:
    """One shard file per flight under tmp; returns {flight: path}."""
    out = {}
    for i, f in enumerate(flights):
        out[f] = write_shard(tmp / f"{f}.h5", make_shard(f, seed=i, **kw))
    return out


def assert_same_run(ref: Path, out: Path, epochs: int) -> None:
    """A resumed stage (out) ended where the uninterrupted one (ref) did: the same history
    (timings aside), the same best epoch and step count, the same kept weights."""
    import json

    import pytest
    import torch

    from cloudml.training.checkpoint import load_checkpoint

    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    a = json.loads((ref / "history.json").read_text())
    b = json.loads((out / "history.json").read_text())
    assert len(a) == len(b) == epochs
    for ra, rb in zip(strip(a), strip(b), strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], abs=1e-6), (ra["epoch"], k)
    sa = json.loads((ref / "summary.json").read_text())
    sb = json.loads((out / "summary.json").read_text())
    for key in ("best_epoch", "epochs_run", "global_steps"):
        assert sa[key] == sb[key], key
    assert sb["best_selection_loss"] == pytest.approx(sa["best_selection_loss"], abs=1e-6)
    wa = load_checkpoint(ref / "model.pt")["model"]
    wb = load_checkpoint(out / "model.pt")["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)
