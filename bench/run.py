"""`make bench`: every benchmark, measured the same way each time -> results.json + docs table.

    .venv/bin/python bench/run.py [--only ingest,loader,train,e2e] [--repeats 3] [--quick]

Sections (each runnable alone with --only; the others keep their last results):
  ingest  bench/ingest_bench.py (one full-size flight, full and local scale) + the local
          synthetic campaign (six flights, scale=local) ingested in this process;
  loader  bench/loader_bench.py: production loader vs research-style reread loader;
  train   bench/train_bench.py per scale and allocator in subprocesses (samples/s, peak RSS
          via wait4), bench/mfu.py for FLOPs/sample and the fp32 matmul ceiling;
  e2e     wall time of `make run PIPELINE=tuned` (per-stage seconds from the run folder's
          metrics.json) and of `make test`.
Children run under jemalloc (the shipped setting, Makefile RUN_ENV) unless a figure says
glibc. --quick shrinks every section for a smoke test and does not time make run/test.
Writes build/bench/results.json and docs/benchmarks.md (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from common import REPO, figure, glibc_env, jemalloc_env, ratio_figure

SECTIONS = ("ingest", "loader", "train", "e2e")
RESULTS = REPO / "build/bench/results.json"
DOC = REPO / "docs/benchmarks.md"
LOGS = REPO / "build/bench/logs"
PY = sys.executable
GIB = 2**30
SIZES = {"local": "22x32", "full": "440x640"}


# --- child processes -----------------------------------------------------------------------
def run_child(
    cmd: list[str], env: dict[str, str], log_name: str, stream: bool = False
) -> dict[str, Any]:
    """Run cmd in REPO; returns rc, wall seconds, peak RSS (bytes, this child tree's largest
    process) and stdout. stderr goes to the terminal (progress), stdout to a log file (and
    the terminal too with stream=True)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{log_name}.log"
    print(f"$ {' '.join(cmd)}  (log: {log_path.relative_to(REPO)})", flush=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as out:
        import subprocess

        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=None if stream else out)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    stdout = "" if stream else log_path.read_text()
    return {
        "rc": p.returncode,
        "wall_s": wall,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
        "stdout": stdout,
        "log": str(log_path.relative_to(REPO)),
    }


def last_json_line(text: str) -> dict[str, Any]:
    """The last line of text that parses as a JSON object (children print one at the end)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON object line in the output")


def checked(res: dict[str, Any], what: str) -> dict[str, Any]:
    if res["rc"] != 0:
        raise RuntimeError(f"{what} exited with {res['rc']} (see {res['log']})")
    return res


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
    args = ["--repeats", str(repeats)]
    args += ["--frames", "130", "--reread-batches", "1"] if quick else ["--reread-batches", "3"]
    res = checked(run_child([PY, "bench/loader_bench.py", *args], jemalloc_env(), "loader"),
                  "loader_bench")  # fmt: skip
    out = loader_figures(last_json_line(res["stdout"]), "bench/loader_bench.py " + " ".join(args))
    out["allocator"] = "jemalloc"
    return out


# --- train ---------------------------------------------------------------------------------
def extrapolate_rss(b1: int, rss1: float, b2: int, rss2: float, batch: int) -> float:
    """Peak RSS at `batch` from two probes, linear in batch (activations scale with B)."""
    if b1 == b2:
        raise ValueError("extrapolate_rss: need two different batch sizes")
    slope = (rss2 - rss1) / (b2 - b1)
    return rss1 + slope * (batch - b1)


def mem_available_bytes() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return float("inf")


def train_child(size: str, batch: int, steps: int, warmup: int, env: dict[str, str],
                tag: str) -> dict[str, Any]:  # fmt: skip
    """One bench/train_bench.py process: its JSON line plus peak RSS and the command."""
    args = ["--size", SIZES[size], "--batch", str(batch), "--frames", "5",
            "--steps", str(steps), "--warmup", str(warmup)]  # fmt: skip
    if size == "full":  # the tuned preset checkpoints at full size (model.configure_checkpointing)
        args.append("--checkpointing")
    res = checked(run_child([PY, "bench/train_bench.py", *args], env, f"train-{tag}"),
                  f"train_bench {tag}")  # fmt: skip
    rec = last_json_line(res["stdout"])
    rec["peak_rss_bytes"] = res["peak_rss_bytes"]
    rec["command"] = "bench/train_bench.py " + " ".join(args)
    return rec


def child_samples_per_s(rec: dict[str, Any]) -> float:
    """batch / median step seconds (train_bench's own samples_per_s is rounded to 0.1)."""
    return rec["batch"] / rec["step_s_median"]


def bench_train(repeats: int, quick: bool, full_batch: int, full_repeats: int) -> dict[str, Any]:
    import mfu as mfu_mod

    from cloudml.config import load_config

    model_cfg = load_config("tuned").model
    out: dict[str, Any] = {"flops": {}}
    n_mm = 1024 if quick else 2048
    rates = mfu_mod.matmul_flops_per_s(n_mm, repeats=3 if quick else 7)
    out["matmul_flops_per_s"] = figure(rates, "FLOP/s", f"bench/mfu.py --matmul-n {n_mm}")
    peak = out["matmul_flops_per_s"]["median"]
    for size in ("local", "full"):
        h, w = mfu_mod.parse_size(size)
        fwd = mfu_mod.counted_forward_flops(model_cfg, 5, h, w)
        if fwd != mfu_mod.analytic_forward_flops(model_cfg, 5, h, w):
            print(f"warning: FLOP count disagrees with the analytic count at {size}", flush=True)
        out["flops"][size] = {"forward": fwd, "train": mfu_mod.train_flops_per_sample(fwd)}

    # Full size costs ~0.1-0.3 TFLOP per sample: a batch-20 step takes minutes on 2 cores, so
    # the timed full-size runs use --full-batch (default 4; per-sample cost barely depends on
    # B once B*T frames fill the cores) and peak RSS at batch 20 is extrapolated from a B=2
    # probe and those runs (activations grow linearly in B). --full-batch 20 measures it
    # directly, after a B=4 probe shows it fits in 85% of the available memory.
    rss_at: dict[int, float] = {}
    probe_batches = () if quick else ((2, 4) if full_batch > 4 else (2,))
    for b in probe_batches:
        rss_at[b] = train_child("full", b, 1, 1, jemalloc_env(), f"probe-b{b}")["peak_rss_bytes"]
    fb = 2 if quick else full_batch
    if len(rss_at) == 2:
        need = extrapolate_rss(2, rss_at[2], 4, rss_at[4], fb)
        if need > 0.85 * mem_available_bytes():
            print(f"full size batch {fb} needs ~{need / GIB:.1f} GiB (> 85% of available "
                  "memory): measuring batch 4", flush=True)  # fmt: skip
            fb = 4
    out["full_batch"] = fb

    plan = {  # size -> (batch, timed steps, warm-up steps, runs under jemalloc)
        "local": (20, 3 if quick else 20, 2 if quick else 3, 1 if quick else repeats),
        "full": (fb, 1 if quick else 2, 1, 1 if quick else full_repeats),
    }
    for alloc, env in (("jemalloc", jemalloc_env()), ("glibc", glibc_env())):
        for size, (b, steps, warm, runs) in plan.items():
            if alloc == "glibc" and size == "full":
                if quick:
                    continue  # minutes per step; the comparison belongs to the real run
                runs = 1
            recs = [train_child(size, b, steps, warm, env, f"{size}-{alloc}-{i}")
                    for i in range(runs)]  # fmt: skip
            sps = [child_samples_per_s(r) for r in recs]
            cmd = recs[0]["command"] + (" (LD_PRELOAD=jemalloc)" if alloc == "jemalloc" else "")
            key = f"{size}_{alloc}"
            train_flops = out["flops"][size]["train"]
            rss = [r["peak_rss_bytes"] for r in recs]
            out[f"{key}_samples_per_s"] = figure(sps, "samples/s", cmd, batch=b)
            out[f"{key}_mfu"] = figure([mfu_mod.mfu(s, train_flops, peak) for s in sps],
                                       "fraction", cmd)  # fmt: skip
            out[f"{key}_peak_rss_gib"] = figure([v / GIB for v in rss], "GiB", cmd, batch=b)
            if size == "full" and alloc == "jemalloc":
                rss_at.setdefault(b, float(min(rss)))
            print(f"train {key} B={b}: " + ", ".join(f"{v:.3g}" for v in sps) + " samples/s",
                  flush=True)  # fmt: skip
            out["threads"] = recs[0].get("threads")
    # the memory goal at the batch it names: one batch-20 step, measured, not extrapolated
    if not quick and fb != 20 and len(rss_at) >= 2:
        (b1, r1), (b2, r2) = sorted(rss_at.items())[:2]
        need = extrapolate_rss(b1, r1, b2, r2, 20)
        if need <= 0.85 * mem_available_bytes():
            rec = train_child("full", 20, 1, 0, jemalloc_env(), "full-b20-memory")
            cmd = rec["command"] + " (LD_PRELOAD=jemalloc)"
            out["full_b20_peak_rss_gib"] = figure([rec["peak_rss_bytes"] / GIB], "GiB", cmd, batch=20)
            out["full_b20_step_s"] = figure([rec["step_s_median"]], "s", cmd, batch=20)
            print(f"train full B=20: peak RSS {rec['peak_rss_bytes'] / GIB:.2f} GiB, "
                  f"step {rec['step_s_median']:.0f} s", flush=True)  # fmt: skip
    out["full_rss_probe_gib"] = {str(b): v / GIB for b, v in sorted(rss_at.items())}
    if len(rss_at) >= 2:
        (b1, r1), (b2, r2) = sorted(rss_at.items())[:2]
        out["full_b20_rss_estimate_gib"] = extrapolate_rss(b1, r1, b2, r2, 20) / GIB
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


def bench_e2e(repeats: int, quick: bool) -> dict[str, Any]:
    runs_dir = REPO / "runs"
    out: dict[str, Any] = {}
    if quick:  # no timing in quick mode: read the newest existing run so the parsing is checked
        d = newest_run_dir(runs_dir, "tuned")
        if d:
            out["existing_run"] = {"dir": str(d.relative_to(REPO)),
                                   "stages_s": stage_seconds(json.loads((d / "metrics.json").read_text()))}  # fmt: skip
        out["note"] = "quick mode: make run / make test not timed"
        return out
    walls, stages = [], []
    for i in range(repeats):
        t0 = time.time()
        res = run_child(
            ["make", "run", "PIPELINE=tuned"], dict(os.environ), f"make-run-{i}", stream=True
        )
        d = newest_run_dir(runs_dir, "tuned", after=t0)
        if d is None:
            raise RuntimeError(f"make run PIPELINE=tuned left no run folder (rc {res['rc']})")
        walls.append(res["wall_s"])
        stages.append(stage_seconds(json.loads((d / "metrics.json").read_text())))
        stages[-1]["_gate_rc"] = res["rc"]
    out["make_run_tuned_wall_s"] = figure(walls, "s", "make run PIPELINE=tuned")
    keys = [k for k in stages[0] if not k.startswith("_")]
    out["stages_s"] = {k: figure([s[k] for s in stages if k in s], "s", "make run PIPELINE=tuned")
                       for k in keys}  # fmt: skip
    out["make_run_rc"] = [s["_gate_rc"] for s in stages]
    walls = []
    rcs = []
    for i in range(repeats):
        res = run_child(["make", "test"], dict(os.environ), f"make-test-{i}", stream=True)
        walls.append(res["wall_s"])
        rcs.append(res["rc"])
    out["make_test_wall_s"] = figure(walls, "s", "make test")
    out["make_test_rc"] = rcs
    return out


# --- results -------------------------------------------------------------------------------
def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The required top-level keys (a figure dict, or None where not measured)."""
    s = results.get("sections", {})
    ing, ld, tr, e2e = (s.get(k) or {} for k in SECTIONS)
    return {
        "ingest_full_frames_per_s": ing.get("flight_full_frames_per_s"),
        "loader_speedup_vs_reread": ld.get("speedup_vs_reread"),
        "train_full_cpu_mfu": tr.get("full_jemalloc_mfu"),
        "make_run_tuned_wall_s": e2e.get("make_run_tuned_wall_s"),
        "make_test_wall_s": e2e.get("make_test_wall_s"),
    }


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(SECTIONS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in SECTIONS]
    if bad:
        raise SystemExit(f"--only: unknown section(s) {bad}; choose from {list(SECTIONS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help=f"comma list of {','.join(SECTIONS)} (default all)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure (default 3)")
    ap.add_argument(
        "--full-repeats",
        type=int,
        default=2,
        help="runs of full-size training under jemalloc (minutes each)",
    )
    ap.add_argument(
        "--full-batch",
        type=int,
        default=4,
        help="full-size training batch (20 = the preset; minutes per step)",
    )
    ap.add_argument("--e2e-repeats", type=int, default=1, help="runs of make run / make test")
    ap.add_argument("--quick", action="store_true", help="small and fast: a smoke test")
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite --doc from the figures already in --results (measures nothing)",
    )
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--doc", type=Path, default=DOC)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("--repeats: must be >= 1")
    if args.render_only:
        if not args.results.is_file():
            raise SystemExit(f"--render-only: no results at {args.results}; run make bench first")
        common.write_text(args.doc, common.render_doc(json.loads(args.results.read_text())))
        print(f"wrote {args.doc} from {args.results}")
        return 0
    only = parse_only(args.only)
    repeats = 1 if args.quick else args.repeats

    results: dict[str, Any] = {}
    if args.results.is_file():  # sections not run keep their last figures
        results = json.loads(args.results.read_text())
    results.setdefault("sections", {})
    results["machine"] = common.machine_facts()
    t_all = time.perf_counter()
    failed: list[str] = []
    for name in only:
        t0 = time.perf_counter()
        print(f"== {name} ==", flush=True)
        try:
            if name == "ingest":
                sec = bench_ingest(repeats, args.quick)
            elif name == "loader":
                sec = bench_loader(repeats, args.quick)
            elif name == "train":
                sec = bench_train(repeats, args.quick, args.full_batch, args.full_repeats)
            else:
                sec = bench_e2e(args.e2e_repeats, args.quick)
        except Exception as e:  # one broken section must not cost the others their figures
            print(f"error: section {name} failed: {e}", file=sys.stderr, flush=True)
            sec = {"error": f"{type(e).__name__}: {e}"}
            failed.append(name)
        sec["quick"] = args.quick
        sec["seconds"] = time.perf_counter() - t0
        sec["measured_utc"] = results["machine"]["date_utc"]
        results["sections"][name] = sec
        common.write_json(args.results, {**results, **headline(results)})  # after every section
    results.update(headline(results))
    common.write_json(args.results, results)
    common.write_text(args.doc, common.render_doc(results))
    print(f"wrote {args.results} and {args.doc} in {time.perf_counter() - t_all:.0f} s")
    if failed:
        print(f"error: section(s) {', '.join(failed)} failed (see above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
