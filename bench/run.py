"""`make bench`: every benchmark, measured the same way each time -> results.json + docs table.

    .venv/bin/python bench/run.py [--only ingest,loader,train,precision,e2e,research]
        [--repeats 3] [--quick]

Sections (each runnable alone with --only; the others keep their last results):
  ingest  bench/ingest_bench.py (one full-size flight, full and local scale) + the local
          synthetic campaign (six flights, scale=local) ingested in this process;
  loader  bench/loader_bench.py: production loader vs research-style reread loader;
  train   bench/train_bench.py per scale and allocator in subprocesses (samples/s, peak RSS
          via wait4), bench/mfu.py for FLOPs/sample and the fp32 matmul ceiling;
  precision  the training step with and without bf16 autocast (mixed_precision_cpu=true,
          on CPUs with native bf16), alternated per round, local scale and full size;
  e2e     wall time of `make run PIPELINE=tuned` with the default ensemble and with one
          member (per-stage seconds from the run folder's metrics.json) and of `make test`;
  research  the research team's own code beside ours in alternating rounds
          (bench/research_side.py), only when RESEARCH_BENCH, ORIG_CLOUDML and RESEARCH_PY
          point at it; otherwise its last figures stay.
Children run under jemalloc (the shipped setting, Makefile RUN_ENV) unless a figure says
glibc. --quick shrinks every section for a smoke test and does not time make run/test.
Writes build/bench/results.json and docs/benchmarks.md (atomically).

This file: the command line, the train section and the headline keys; the other sections
are in bench/run_sections.py, child processes in bench/children.py, the doc in
bench/common.py (render_doc) with bench/doc_sections.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import common
import research_side
from children import (  # noqa: F401  (tests reach run.<name>)
    PY,
    checked,
    child_samples_per_s,
    last_json_line,
    run_child,
    train_child,
)
from common import REPO, extrapolate_rss, figure, glibc_env, jemalloc_env
from run_sections import (  # noqa: F401  (tests/test_bench.py reaches them as run.<name>)
    bench_e2e,
    bench_ingest,
    bench_loader,
    bench_precision,
    ingest_figures,
    loader_figures,
    newest_run_dir,
    stage_seconds,
)
from step_anatomy import step_anatomy

SECTIONS = ("ingest", "loader", "train", "precision", "e2e", "research")
RESULTS = REPO / "build/bench/results.json"
DOC = REPO / "docs/benchmarks.md"
GIB = 2**30


# --- train ---------------------------------------------------------------------------------
def mem_available_bytes() -> float:
    """MemAvailable of /proc/meminfo in bytes (inf when the line is missing)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return float("inf")


def ceiling_and_flops(quick: bool) -> dict[str, Any]:
    """The fp32 matmul ceiling (FLOP/s figure) and FLOPs per sample at both sizes."""
    import mfu as mfu_mod

    from cloudml.config import load_config

    model_cfg = load_config("tuned").model
    out: dict[str, Any] = {"flops": {}}
    n_mm = 1024 if quick else 2048
    rates = mfu_mod.matmul_flops_per_s(n_mm, repeats=3 if quick else 7)
    out["matmul_flops_per_s"] = figure(rates, "FLOP/s", f"bench/mfu.py --matmul-n {n_mm}")
    for size in ("local", "full"):
        h, w = mfu_mod.parse_size(size)
        fwd = mfu_mod.counted_forward_flops(model_cfg, 5, h, w)
        if fwd != mfu_mod.analytic_forward_flops(model_cfg, 5, h, w):
            print(f"warning: FLOP count disagrees with the analytic count at {size}", flush=True)
        out["flops"][size] = {"forward": fwd, "train": mfu_mod.train_flops_per_sample(fwd)}
    return out


def full_batch_plan(quick: bool, full_batch: int) -> tuple[int, dict[int, float]]:
    """(full-size batch to time, {batch: peak RSS bytes} of the memory probes run)."""
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
    return fb, rss_at


def timed_runs(
    plan: dict[str, tuple[int, int, int, int]],
    quick: bool,
    flops: dict[str, Any],
    peak: float,
    rss_at: dict[int, float],
) -> dict[str, Any]:
    """Throughput, MFU and peak RSS per size and allocator (full-size glibc: none in quick
    mode); the full-size jemalloc RSS joins `rss_at`."""
    import mfu as mfu_mod

    out: dict[str, Any] = {}
    for alloc, env in (("jemalloc", jemalloc_env()), ("glibc", glibc_env())):
        for size, (b, steps, warm, runs) in plan.items():
            if alloc == "glibc" and size == "full" and quick:
                continue  # minutes per step; the comparison belongs to the real run
            recs = [train_child(size, b, steps, warm, env, f"{size}-{alloc}-{i}")
                    for i in range(runs)]  # fmt: skip
            sps = [child_samples_per_s(r) for r in recs]
            cmd = recs[0]["command"] + (" (LD_PRELOAD=jemalloc)" if alloc == "jemalloc" else "")
            key = f"{size}_{alloc}"
            train_flops = flops[size]["train"]
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
    return out


def b20_memory(rss_at: dict[int, float]) -> dict[str, Any]:
    """One measured batch-20 step (peak RSS, seconds) when the probes say it fits, else {}."""
    (b1, r1), (b2, r2) = sorted(rss_at.items())[:2]
    need = extrapolate_rss(b1, r1, b2, r2, 20)
    if need > 0.85 * mem_available_bytes():
        return {}
    rec = train_child("full", 20, 1, 0, jemalloc_env(), "full-b20-memory")
    cmd = rec["command"] + " (LD_PRELOAD=jemalloc)"
    out = {
        "full_b20_peak_rss_gib": figure([rec["peak_rss_bytes"] / GIB], "GiB", cmd, batch=20),
        "full_b20_step_s": figure([rec["step_s_median"]], "s", cmd, batch=20),
    }
    print(f"train full B=20: peak RSS {rec['peak_rss_bytes'] / GIB:.2f} GiB, "
          f"step {rec['step_s_median']:.0f} s", flush=True)  # fmt: skip
    return out


def bench_train(repeats: int, quick: bool, full_batch: int, full_repeats: int) -> dict[str, Any]:
    """Section train: FLOPs and ceiling, memory probes, timed runs, the batch-20 memory goal."""
    out = ceiling_and_flops(quick)
    peak = out["matmul_flops_per_s"]["median"]
    fb, rss_at = full_batch_plan(quick, full_batch)
    out["full_batch"] = fb
    plan = {  # size -> (batch, timed steps, warm-up steps, runs under jemalloc)
        "local": (20, 3 if quick else 20, 2 if quick else 3, 1 if quick else repeats),
        "full": (fb, 1 if quick else 2, 1, 1 if quick else full_repeats),
    }
    out.update(timed_runs(plan, quick, out["flops"], peak, rss_at))
    # the memory goal at the batch it names: one batch-20 step, measured, not extrapolated
    if not quick and fb != 20 and len(rss_at) >= 2:
        out.update(b20_memory(rss_at))
    if not quick:  # why full size sits where it does: no recompute, and the step's profile
        out.update(step_anatomy(fb, full_repeats, out["flops"]["full"]["train"], peak))
    out["full_rss_probe_gib"] = {str(b): v / GIB for b, v in sorted(rss_at.items())}
    if len(rss_at) >= 2:
        (b1, r1), (b2, r2) = sorted(rss_at.items())[:2]
        out["full_b20_rss_estimate_gib"] = extrapolate_rss(b1, r1, b2, r2, 20) / GIB
    return out


# --- results -------------------------------------------------------------------------------
def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The required top-level keys (a figure dict, or None where not measured)."""
    s = results.get("sections", {})
    ing, ld, tr, e2e = (s.get(k) or {} for k in ("ingest", "loader", "train", "e2e"))
    return {
        "ingest_full_frames_per_s": ing.get("flight_full_frames_per_s"),
        "loader_speedup_vs_reread": ld.get("speedup_vs_reread"),
        "train_full_cpu_mfu": tr.get("full_jemalloc_mfu"),
        "make_run_tuned_wall_s": e2e.get("make_run_tuned_wall_s"),
        "make_run_tuned_single_stages_s": e2e.get("make_run_tuned_single_stages_s"),
        "make_test_wall_s": e2e.get("make_test_wall_s"),
        "train_full_vs_research": (s.get("research") or {}).get("full_jemalloc_ratio"),
    }


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(SECTIONS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in SECTIONS]
    if bad:
        raise SystemExit(f"--only: unknown section(s) {bad}; choose from {list(SECTIONS)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of bench/run.py (SystemExit on a bad --repeats)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help=f"comma list of {','.join(SECTIONS)} (default all)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure (default 3)")
    ap.add_argument(
        "--full-repeats",
        type=int,
        default=2,
        help="runs of full-size training per allocator (minutes each)",
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
    return args


def render_only(args: argparse.Namespace) -> int:
    """--render-only: rewrite --doc from the figures already in --results."""
    if not args.results.is_file():
        raise SystemExit(f"--render-only: no results at {args.results}; run make bench first")
    common.write_text(args.doc, common.render_doc(json.loads(args.results.read_text())))
    print(f"wrote {args.doc} from {args.results}")
    return 0


def run_section(name: str, args: argparse.Namespace, repeats: int) -> dict[str, Any] | None:
    """The figures of one section (`name` in SECTIONS); None for a section that cannot run
    here (research, unconfigured)."""
    if name == "ingest":
        return bench_ingest(repeats, args.quick)
    if name == "loader":
        return bench_loader(repeats, args.quick)
    if name == "train":
        return bench_train(repeats, args.quick, args.full_batch, args.full_repeats)
    if name == "research":
        return research_side.bench_research(repeats, args.full_repeats, args.quick)
    if name == "precision":
        return bench_precision(repeats, args.quick, args.full_repeats)
    return bench_e2e(args.e2e_repeats, args.quick)


def measure(args: argparse.Namespace) -> int:
    """Run the chosen sections, keep the others' last figures, write results and the doc."""
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
            sec = run_section(name, args, repeats)
            if sec is None:  # the research code is not configured: keep its last figures
                print(f"{name}: skipped (set {', '.join(research_side.ENV_VARS)} to run it)")
                continue
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return render_only(args) if args.render_only else measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
