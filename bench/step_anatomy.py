"""Why full-size MFU is what it is: the same step without checkpointing, and its profile.

Part of section train (bench/run.py). Two measurements beside the timed full-size runs:

- the full-size step at the same batch **without** gradient checkpointing (no recompute;
  BatchNorm then normalises over all B*T frames, so it is a measurement of the arithmetic's
  speed, not a setting to ship), plus a batch-2 probe, so that its memory can be
  extrapolated to batch 20 as for the checkpointed step;
- bench/profile_step.py on the checkpointed step: each kind of operator's share of it.
"""

from __future__ import annotations

from typing import Any

from children import PY, checked, child_samples_per_s, last_json_line, run_child, train_child
from common import extrapolate_rss, figure, jemalloc_env

GIB = 2**30


def nockpt_child(batch: int, steps: int, warmup: int, tag: str) -> dict[str, Any]:
    """bench/run.py's full-size training child under jemalloc, checkpointing off."""
    rec = train_child("full", batch, steps, warmup, jemalloc_env(), tag, checkpointing=False)
    rec["command"] += " (LD_PRELOAD=jemalloc)"
    return rec


def step_anatomy(batch: int, runs: int, train_flops: float, peak: float) -> dict[str, Any]:
    """Figures of the un-checkpointed full-size step and the checkpointed step's profile."""
    import mfu as mfu_mod

    recs = [nockpt_child(batch, 2, 1, f"full-nockpt-{i}") for i in range(runs)]
    sps = [child_samples_per_s(r) for r in recs]
    cmd = recs[0]["command"]
    rss = [r["peak_rss_bytes"] for r in recs]
    probe = nockpt_child(2, 1, 1, "full-nockpt-probe-b2")["peak_rss_bytes"]
    out = {
        "full_nockpt_samples_per_s": figure(sps, "samples/s", cmd, batch=batch),
        "full_nockpt_mfu": figure(
            [mfu_mod.mfu(s, train_flops, peak) for s in sps], "fraction", cmd
        ),
        "full_nockpt_peak_rss_gib": figure([v / GIB for v in rss], "GiB", cmd, batch=batch),
        "full_nockpt_b20_rss_estimate_gib": extrapolate_rss(2, probe, batch, min(rss), 20) / GIB,
    }
    print(f"train full without checkpointing B={batch}: " + ", ".join(f"{v:.3g}" for v in sps)
          + " samples/s", flush=True)  # fmt: skip
    args = ["--size", "440x640", "--batch", str(batch), "--frames", "5", "--checkpointing"]
    res = checked(run_child([PY, "bench/profile_step.py", *args], jemalloc_env(), "full-profile"),
                  "profile_step")  # fmt: skip
    prof = last_json_line(res["stdout"])
    prof["command"] = "bench/profile_step.py " + " ".join(args) + " (LD_PRELOAD=jemalloc)"
    out["full_profile"] = prof
    return out
