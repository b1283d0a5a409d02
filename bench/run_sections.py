"""The ingest, loader, precision and end-to-end sections of bench/run.py (training is in run.py).

Each `bench_<section>` runs its children and returns the section's figures; the
`*_figures` and run-folder helpers are pure and tested in tests/test_bench.py.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from children import PY, checked, child_samples_per_s, last_json_line, run_child, train_child
from common import REPO, figure, jemalloc_env, ratio_figure


# --- ingest --------------------------------------------------------------------------------
def ingest_figures(ing: dict[str, Any], command: str) -> dict[str, Any]:
    """Figures from bench/ingest_bench.py's JSON (per scale: runs_s, n_raw_frames, share)."""
    out: dict[str, Any] = {"source": ing.get("source")}
    for scale in ("full", "local"):
        r = ing.get(scale)
        if not r:
            continue
        runs = r["runs_s"]
        frames = r["n_raw_frames"]
        out[f"flight_{scale}_s"] = figure(runs, "s", command)
        out[f"flight_{scale}_frames_per_s"] = figure(
            [frames / s for s in runs], "frames/s", command
        )
        out[f"flight_{scale}_share"] = r["share"]
        out[f"flight_{scale}_info"] = {
            k: r.get(k) for k in ("n_raw_frames", "raw_frame_shape", "n_frames", "frame_shape",
                                  "n_samples", "shard_mb")
        }  # fmt: skip
    return out


def campaign_ingest(repeats: int) -> dict[str, Any]:
    """Seconds to ingest the six synthetic flights at scale=local (the `make run` campaign)."""
    from cloudml.config import load_config
    from cloudml.data import synth
    from cloudml.data.ingest import ingest_flight

    cfg = load_config("tuned", {"scale": "local"})
    flights = list(cfg.data.flights)
    runs, frames = [], 0
    with tempfile.TemporaryDirectory(prefix="campaign-bench-") as tmp:
        raw_dir = Path(tmp) / "raw"
        t0 = time.perf_counter()
        # exactly what `make run` generates on first use (cloudml.cluster.local_run.ensure_campaign)
        synth.write_campaign(raw_dir, seed=0, frame_size=synth.LOCAL_FRAME, flights=tuple(flights))
        print(f"local campaign ({len(flights)} flights) written in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
        for rep in range(repeats):
            t0 = time.perf_counter()
            frames = 0
            for name in flights:
                s = ingest_flight(raw_dir, name, Path(tmp) / f"{name}.h5", cfg)
                frames += s["n_raw_frames"]
            runs.append(time.perf_counter() - t0)
            print(f"campaign ingest run {rep + 1}: {runs[-1]:.2f} s, {frames} frames", flush=True)
    cmd = "bench/run.py --only ingest (campaign: in bench/run.py's own process)"
    return {
        "campaign_local_s": figure(runs, "s", cmd, flights=flights, n_raw_frames=frames),
        "campaign_local_frames_per_s": figure([frames / s for s in runs], "frames/s", cmd),
    }


def bench_ingest(repeats: int, quick: bool) -> dict[str, Any]:
    """Section ingest: bench/ingest_bench.py in a child (jemalloc), then the local campaign."""
    out_json = REPO / "build/bench/ingest.json"
    cmd = [PY, "bench/ingest_bench.py", "--repeats", str(repeats), "--out", str(out_json)]
    if quick:
        cmd += ["--frames", "120", "--source", "random"]
    checked(run_child(cmd, jemalloc_env(), "ingest"), "ingest_bench")
    ing = json.loads(out_json.read_text())
    shown = [a for a in cmd[2:] if a not in ("--out", str(out_json))]
    res = ingest_figures(ing, " ".join(["bench/ingest_bench.py", *shown]) + " (jemalloc)")
    res.update(campaign_ingest(1 if quick else repeats))
    res["allocator"] = "jemalloc"
    return res


# --- loader --------------------------------------------------------------------------------
def loader_figures(lb: dict[str, Any], command: str) -> dict[str, Any]:
    """Figures from bench/loader_bench.py's JSON line (per-round samples/s of both loaders)."""
    prod, rere = lb["production_samples_per_s"], lb["reread_samples_per_s"]
    return {
        "production_samples_per_s": figure(prod, "samples/s", command),
        "reread_samples_per_s": figure(rere, "samples/s", command),
        "speedup_vs_reread": ratio_figure(prod, rere, "x", command),
        "production_no_augment_samples_per_s": figure(
            lb.get("production_no_augment_samples_per_s") or [], "samples/s", command
        )
        if lb.get("production_no_augment_samples_per_s")
        else None,
        "info": {k: lb[k] for k in ("n_samples", "frame_shape", "temporal_frames", "batch",
                                    "reread_batches")},
    }  # fmt: skip


def bench_loader(repeats: int, quick: bool) -> dict[str, Any]:
    """Section loader: bench/loader_bench.py in a child (jemalloc)."""
    args = ["--repeats", str(repeats)]
    args += ["--frames", "130", "--reread-batches", "1"] if quick else ["--reread-batches", "3"]
    res = checked(run_child([PY, "bench/loader_bench.py", *args], jemalloc_env(), "loader"),
                  "loader_bench")  # fmt: skip
    out = loader_figures(last_json_line(res["stdout"]), "bench/loader_bench.py " + " ".join(args))
    out["allocator"] = "jemalloc"
    return out


# --- end to end ----------------------------------------------------------------------------
def newest_run_dir(runs_dir: Path, pipeline: str, after: float = 0.0) -> Path | None:
    """The newest runs/<pipeline>-* folder holding metrics.json, modified after `after`."""
    cands = [p for p in runs_dir.glob(f"{pipeline}-*") if (p / "metrics.json").is_file()]
    cands = [p for p in cands if (p / "metrics.json").stat().st_mtime >= after]
    return max(cands, key=lambda p: (p / "metrics.json").stat().st_mtime) if cands else None


def stage_seconds(metrics: dict[str, Any]) -> dict[str, float]:
    """Per-stage seconds from a run folder's metrics.json ('seconds': {stage: s})."""
    sec = metrics.get("seconds")
    if not isinstance(sec, dict):
        raise ValueError("metrics.json has no 'seconds' object")
    return {str(k): float(v) for k, v in sec.items()}


def stages_together(stages: dict[str, float]) -> float:
    """The stages' own seconds summed: not the run's 'total' (which also holds the runner's
    overhead) nor the bench's '_' bookkeeping entries."""
    return sum(v for k, v in stages.items() if k != "total" and not k.startswith("_"))


def _timed_make_runs(repeats: int, extra: list[str], tag: str) -> tuple[list[float], list[dict]]:
    """`make run PIPELINE=tuned [extra]` `repeats` times: wall seconds and per-stage seconds.

    Each run gets an empty store of its own (CLOUDML_STORE, removed afterwards): training
    stages resume from the state an identical earlier run left in the store
    (cloudml.store.resume), so a second run on the default store would time a resume."""
    runs_dir = REPO / "runs"
    walls, stages = [], []
    for i in range(repeats):
        t0 = time.time()
        (REPO / "build" / "bench").mkdir(parents=True, exist_ok=True)
        store = Path(tempfile.mkdtemp(prefix=f"store-{tag}-", dir=REPO / "build" / "bench"))
        try:
            res = run_child(["make", "run", "PIPELINE=tuned", *extra],
                            {**os.environ, "CLOUDML_STORE": str(store)},
                            f"make-run-{tag}-{i}", stream=True)  # fmt: skip
        finally:
            shutil.rmtree(store, ignore_errors=True)
        d = newest_run_dir(runs_dir, "tuned", after=t0)
        if d is None:
            raise RuntimeError(
                f"make run PIPELINE=tuned {extra} left no run folder (rc {res['rc']})"
            )
        walls.append(res["wall_s"])
        stages.append(stage_seconds(json.loads((d / "metrics.json").read_text())))
        stages[-1]["_gate_rc"] = res["rc"]
    return walls, stages


def bench_e2e(repeats: int, quick: bool) -> dict[str, Any]:
    """Section e2e: wall time of `make run PIPELINE=tuned` with the default ensemble and
    with one member (SET=ensemble_size=1; stages from its metrics.json) and of `make test`;
    quick mode times nothing and reads the newest existing run."""
    runs_dir = REPO / "runs"
    out: dict[str, Any] = {}
    if quick:  # no timing in quick mode: read the newest existing run so the parsing is checked
        d = newest_run_dir(runs_dir, "tuned")
        if d:
            out["existing_run"] = {"dir": str(d.relative_to(REPO)),
                                   "stages_s": stage_seconds(json.loads((d / "metrics.json").read_text()))}  # fmt: skip
        out["note"] = "quick mode: make run / make test not timed"
        return out
    walls, stages = _timed_make_runs(repeats, [], "ensemble")
    out["make_run_tuned_wall_s"] = figure(walls, "s", "make run PIPELINE=tuned")
    keys = [k for k in stages[0] if not k.startswith("_")]
    out["stages_s"] = {k: figure([s[k] for s in stages if k in s], "s", "make run PIPELINE=tuned")
                       for k in keys}  # fmt: skip
    out["make_run_rc"] = [s["_gate_rc"] for s in stages]
    walls1, stages1 = _timed_make_runs(repeats, ["SET=ensemble_size=1"], "single")
    cmd1 = "make run PIPELINE=tuned SET=ensemble_size=1"
    out["make_run_tuned_single_wall_s"] = figure(walls1, "s", cmd1)
    out["make_run_tuned_single_stages_s"] = figure(
        [stages_together(st) for st in stages1], "s", cmd1
    )
    walls = []
    rcs = []
    for i in range(repeats):
        res = run_child(["make", "test"], dict(os.environ), f"make-test-{i}", stream=True)
        walls.append(res["wall_s"])
        rcs.append(res["rc"])
    out["make_test_wall_s"] = figure(walls, "s", "make test")
    out["make_test_rc"] = rcs
    return out


# --- precision -----------------------------------------------------------------------------
def precision_figures(pairs: dict[str, list[tuple[dict, dict]]]) -> dict[str, Any]:
    """Figures from alternated float32 / bf16 train_bench records, per size: samples/s of
    each, their ratio paired by round, and whether bf16 applied (pure)."""
    out: dict[str, Any] = {}
    for size, recs in pairs.items():
        if not recs:
            continue
        fp32 = [child_samples_per_s(a) for a, _ in recs]
        bf16 = [child_samples_per_s(b) for _, b in recs]
        cmd = recs[0][1]["command"] + " (LD_PRELOAD=jemalloc), against the same without --bf16"
        batch = recs[0][0]["batch"]
        out[f"{size}_fp32_samples_per_s"] = figure(fp32, "samples/s", cmd, batch=batch)
        out[f"{size}_bf16_samples_per_s"] = figure(bf16, "samples/s", cmd, batch=batch)
        out[f"{size}_bf16_speedup"] = ratio_figure(bf16, fp32, "x", cmd)
        out[f"{size}_bf16_applied"] = all(b.get("bf16") for _, b in recs)
    return out


def bench_precision(repeats: int, quick: bool, full_repeats: int) -> dict[str, Any]:
    """Section precision: the training step with and without the bf16 autocast of
    mixed_precision_cpu=true (bf16 where native, training.loop._autocast), alternated in
    each round so that drift hits both; local scale (batch 20) and full size (batch 4,
    checkpointed)."""
    plan = {"local": (20, 3 if quick else 20, 2 if quick else 3, 1 if quick else repeats)}
    if not quick:
        plan["full"] = (4, 2, 1, full_repeats)
    pairs: dict[str, list[tuple[dict, dict]]] = {}
    for size, (batch, steps, warmup, runs) in plan.items():
        pairs[size] = []
        for i in range(runs):
            a, b = (train_child(size, batch, steps, warmup, jemalloc_env(), f"prec-{size}-{m}-{i}",
                                bf16=m == "bf16") for m in ("fp32", "bf16"))  # fmt: skip
            print(f"precision {size} round {i + 1}: float32 {a['step_s_median']} vs bf16 "
                  f"{b['step_s_median']} s per step", flush=True)  # fmt: skip
            pairs[size].append((a, b))
    return precision_figures(pairs)
