"""Shared benchmark helpers: machine facts, median/spread, JSON and Markdown writers.

Every figure is a `summarize`d list of runs ({median, min, max, n, runs}) plus the command
that produced it, so the table in docs/benchmarks.md always shows the spread beside the
median and says how to reproduce it. Pure functions except `machine_facts` and the writers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/run.py`: make `cloudml` importable
    sys.path.insert(0, str(REPO))

from cloudml.fileio import atomic_path  # noqa: E402

JEMALLOC_LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
NOT_MEASURED = "not measured"


# --- statistics ----------------------------------------------------------------------------
def summarize(values: Sequence[float]) -> dict[str, Any]:
    """{median, min, max, n, runs} of repeated measurements; raises on an empty list."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarize: no measurements")
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "runs": vals,
    }


def figure(values: Sequence[float], unit: str, command: str, **extra: Any) -> dict[str, Any]:
    """A reported figure: summary of the runs, its unit and the command that measured it."""
    return {**summarize(values), "unit": unit, "command": command, **extra}


def ratio_figure(
    num: Sequence[float], den: Sequence[float], unit: str, command: str
) -> dict[str, Any]:
    """Figure for num/den measured in the same repeats: pairwise ratios (zip by repeat).

    The spread of a ratio of two medians would hide how much it moves run to run.
    """
    if len(num) != len(den):
        raise ValueError(f"ratio_figure: {len(num)} numerators vs {len(den)} denominators")
    return figure([a / b for a, b in zip(num, den, strict=True)], unit, command)


# --- machine ---------------------------------------------------------------------------------
def cpu_model(cpuinfo: str) -> str:
    """The first 'model name' of /proc/cpuinfo text ('unknown' when absent)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return "unknown"


def allocator_name(env: dict[str, str]) -> str:
    """'jemalloc (MALLOC_CONF=...)' when LD_PRELOAD holds jemalloc, else glibc malloc."""
    if "jemalloc" in env.get("LD_PRELOAD", ""):
        return f"jemalloc (MALLOC_CONF={env.get('MALLOC_CONF', '')})"
    return "glibc malloc"


def jemalloc_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) with jemalloc preloaded as the Makefile does."""
    env = dict(os.environ if base is None else base)
    env["LD_PRELOAD"] = JEMALLOC_LIB
    env["MALLOC_CONF"] = JEMALLOC_CONF
    return env


def glibc_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` with any preloaded allocator removed (glibc malloc)."""
    env = dict(os.environ if base is None else base)
    env.pop("LD_PRELOAD", None)
    env.pop("MALLOC_CONF", None)
    return env


def machine_facts() -> dict[str, Any]:
    """Cores, CPU model, memory, torch version/threads, allocator, commit: the table header."""
    import torch

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_model": cpu_model(cpuinfo),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "allocator": allocator_name(dict(os.environ)),
        "jemalloc_available": Path(JEMALLOC_LIB).is_file(),
        "gpu": "none (no GPU lent)"
        if not torch.cuda.is_available()
        else torch.cuda.get_device_name(0),
        "commit": commit,
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --- writers ---------------------------------------------------------------------------------
def write_json(path: Path, obj: Any) -> Path:
    """Write obj as indented JSON atomically (a failed run leaves the old file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o644)  # mkstemp makes it 0600; results are for the whole team
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        tmp.chmod(0o644)
    return Path(path)


def fmt_num(x: float | None, digits: int = 3) -> str:
    """Compact number: 3 significant digits, thousands without exponent."""
    if x is None:
        return NOT_MEASURED
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax == 0:
        return "0"
    return f"{x:.{digits}g}"


def fmt_figure(fig: dict[str, Any] | None, scale: float = 1.0) -> tuple[str, str, str]:
    """(median, 'min–max', n) cells of a figure; 'not measured' cells when fig is None."""
    if not fig:
        return NOT_MEASURED, "", ""
    med, lo, hi = (fig[k] * scale for k in ("median", "min", "max"))
    if fig["n"] == 1:
        return fmt_num(med), "(1 run)", "1"
    return fmt_num(med), f"{fmt_num(lo)}–{fmt_num(hi)}", str(fig["n"])


def markdown_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """GitHub Markdown table; '|' inside cells is escaped."""

    def cell(s: str) -> str:
        return str(s).replace("|", "\\|")

    out = ["| " + " | ".join(cell(h) for h in header) + " |"]
    out.append("|" + "|".join("---" for _ in header) + "|")
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


FIGURE_HEADER = ("figure", "median", "spread (min–max)", "runs", "goal", "command")


def figure_rows(
    items: Sequence[tuple[str, dict[str, Any] | None, str, float]],
) -> list[list[str]]:
    """Rows of (label, figure or None, goal, scale) -> table rows; missing -> 'not measured'."""
    rows = []
    for label, fig, goal, scale in items:
        med, spread, n = fmt_figure(fig, scale)
        unit = (fig or {}).get("unit", "")
        label_u = f"{label} ({unit})" if unit and scale == 1.0 else label
        cmd = f"`{fig['command']}`" if fig and fig.get("command") else ""
        rows.append([label_u, med, spread, n, goal, cmd])
    return rows


# --- docs/benchmarks.md --------------------------------------------------------------------
def _goal(value: float | None, op: str, target: float, text: str) -> str:
    """'text: met' / 'text: missed' / 'text' when not measured."""
    if value is None:
        return text
    ok = value >= target if op == ">=" else value <= target
    return f"{text}: {'met' if ok else 'MISSED'}"


def _med(fig: dict[str, Any] | None) -> float | None:
    return fig["median"] if fig else None


def _section(results: dict[str, Any], name: str) -> dict[str, Any]:
    return (results.get("sections") or {}).get(name) or {}


def _measured_line(sec: dict[str, Any]) -> str:
    if not sec:
        return "_Section not measured yet: run `bench/run.py --only ...`._\n"
    if sec.get("error"):
        return f"_Not measured: the last run of this section failed ({sec['error']})._\n"
    quick = " — **quick mode (smoke test, not a reportable figure)**" if sec.get("quick") else ""
    return f"_Measured {sec.get('measured_utc', '?')} in {sec.get('seconds', 0):.0f} s{quick}._\n"


def render_doc(results: dict[str, Any]) -> str:
    """The whole docs/benchmarks.md: method prose + one table per section, filled from
    results.json; a section never measured shows 'not measured' cells."""
    m = results.get("machine", {})
    ing, ld, tr, e2e = (_section(results, k) for k in ("ingest", "loader", "train", "e2e"))
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run.py`) from `build/bench/results.json`; do not edit",
        "by hand. Every figure is the median of several runs with the spread (min–max) beside",
        "it and the command that measured it. One section alone: `bench/run.py --only",
        "ingest,loader,train,e2e --repeats N`; a smoke test: `bench/run.py --quick`. Run it on",
        "a quiet machine: other processes on the same cores move every figure.",
        "",
        "Defaults of `make bench`: 3 runs per figure, full-size training at batch 4 (2 runs under",
        "jemalloc, 1 under glibc; a batch-20 step takes minutes on 2 cores, `--full-batch 20`",
        "measures it when the memory probes say it fits), 1 run each of `make run` and",
        "`make test`. Logs of every child: `build/bench/logs/`.",
        "",
        "## Machine",
        "",
        markdown_table(
            [
                [
                    "CPU",
                    f"{m.get('cpu_model', '?')}, {m.get('cores', '?')} cores "
                    f"({m.get('usable_cores', '?')} usable)",
                ],
                ["memory", f"{m.get('memory_gib', '?')} GiB"],
                ["torch / threads", f"{m.get('torch', '?')} / {m.get('torch_threads', '?')}"],
                ["python", str(m.get("python", "?"))],
                [
                    "allocator",
                    "children under jemalloc (`LD_PRELOAD="
                    + JEMALLOC_LIB
                    + f" MALLOC_CONF={JEMALLOC_CONF}`) unless a row says glibc; "
                    f"bench/run.py itself: {m.get('allocator', '?')}",
                ],
                ["GPU", str(m.get("gpu", "?"))],
                ["commit / date", f"{m.get('commit', '?')} / {m.get('date_utc', '?')}"],
            ],
            ("", ""),
        ),  # fmt: skip
        "",
    ]

    # 1. ingest
    fi = ing.get("flight_full_info") or {}
    out += [
        "## 1. Ingest",
        "",
        _measured_line(ing),
        f"One full-size flight ({fi.get('n_raw_frames', '?')} raw frames of "
        f"{'x'.join(map(str, fi.get('raw_frame_shape') or ['?']))}, source "
        f"{ing.get('source', '?')}) through `ingest_flight` at scale=full and at scale=local "
        "(bench/ingest_bench.py), and the six-flight synthetic campaign at scale=local (what "
        "`make run` ingests).",
        "",
        markdown_table(
            figure_rows(
                [
                    ("full flight, scale=full", ing.get("flight_full_s"), "", 1.0),
                    ("full flight, scale=full", ing.get("flight_full_frames_per_s"), "", 1.0),
                    ("full flight, scale=local", ing.get("flight_local_s"), "", 1.0),
                    ("full flight, scale=local", ing.get("flight_local_frames_per_s"), "", 1.0),
                    ("local campaign (6 flights)", ing.get("campaign_local_s"), "", 1.0),
                    ("local campaign (6 flights)", ing.get("campaign_local_frames_per_s"), "", 1.0),
                ]
            ),
            FIGURE_HEADER,
        ),
        "",
    ]
    share_rows = []
    for scale in ("full", "local"):
        sh = ing.get(f"flight_{scale}_share")
        if sh:
            share_rows.append([f"scale={scale}"] + [f"{sh.get(k, 0):.0%}" for k in
                              ("read", "flat_field", "clahe", "write", "other")])  # fmt: skip
    if share_rows:
        out += [
            "Share of the median run's time (ingest's own timers):",
            "",
            markdown_table(share_rows, ("", "read", "flat-field", "CLAHE", "write", "other")),
            "",
        ]

    # 2. loader
    li = ld.get("info") or {}
    speed = _med(ld.get("speedup_vs_reread"))
    prod = _med(ld.get("production_samples_per_s"))
    train_full = _med(tr.get("full_jemalloc_samples_per_s"))
    train_local = _med(tr.get("local_jemalloc_samples_per_s"))
    out += [
        "## 2. Input pipeline",
        "",
        _measured_line(ld),
        f"Augmented batches of {li.get('batch', 20)} samples x {li.get('temporal_frames', 5)} "
        f"frames of {'x'.join(map(str, li.get('frame_shape') or [440, 640]))} from the same "
        f"full-size flight ({li.get('n_samples', '?')} samples), both loaders in one process, "
        "rounds interleaved. *production*: `cloudml.training.data` (shard read once, one gather per "
        "batch, float-space augmentation). *reread*: the research design (DESIGN §3) in "
        "bench/loader_bench.py: per sample reopen the IRAI HDF5 file, read T frames, "
        "swath-slice, flat-field, min-max, CLAHE, z-score (its flat is fitted once, in its "
        "favour); tests/test_bench.py checks both give the same tensors.",
        "",
        markdown_table(
            figure_rows(
                [
                    ("production loader", ld.get("production_samples_per_s"), "", 1.0),
                    (
                        "production loader, gather only (no augmentation)",
                        ld.get("production_no_augment_samples_per_s"),
                        "",
                        1.0,
                    ),
                    ("reread loader (research design)", ld.get("reread_samples_per_s"), "", 1.0),
                    (
                        "speedup, paired per round",
                        ld.get("speedup_vs_reread"),
                        _goal(speed, ">=", 20, ">= 20x"),
                        1.0,
                    ),
                ]
            ),
            FIGURE_HEADER,
        ),  # fmt: skip
        "",
    ]
    if prod and train_full:
        out += [
            f"The model consumes {fmt_num(train_full)} samples/s at full size (section 3), so the "
            f"production loader delivers {fmt_num(prod / train_full)}x what training needs"
            + (f"; at local scale training takes {fmt_num(train_local)} samples/s from an "
               "in-memory gather of 22x32 frames" if train_local is not None else "")
            + ". "
            + ("The loader is not the bottleneck." if prod > train_full
               else "**The loader is the bottleneck at full size.**"),
            "",
        ]  # fmt: skip

    # 3. training
    fl = tr.get("flops") or {}
    peak = _med(tr.get("matmul_flops_per_s"))
    mfu_full = _med(tr.get("full_jemalloc_mfu"))
    fb = tr.get("full_batch")
    rss_full = _med(tr.get("full_jemalloc_peak_rss_gib"))
    est20 = tr.get("full_b20_rss_estimate_gib")
    b20 = _med(tr.get("full_b20_peak_rss_gib"))
    if fb == 20 and rss_full is not None:
        mem_goal = _goal(rss_full, "<=", 16, "batch 20 <= 16 GiB")
    elif b20 is not None:
        mem_goal = "see the batch-20 row"
    elif est20 is not None:
        mem_goal = _goal(est20, "<=", 16, f"batch 20 <= 16 GiB (estimated {est20:.1f} GiB)")
    else:
        mem_goal = "batch 20 <= 16 GiB"
    rows = []
    for size in ("local", "full"):
        for alloc in ("jemalloc", "glibc"):
            k = f"{size}_{alloc}"
            b = (tr.get(f"{k}_samples_per_s") or {}).get("batch", "?")
            rows += figure_rows([
                (f"{size} {alloc} B={b}: throughput", tr.get(f"{k}_samples_per_s"), "", 1.0),
                (f"{size} {alloc} B={b}: MFU (%)", tr.get(f"{k}_mfu"),
                 _goal(_med(tr.get(f"{k}_mfu")), ">=", 0.45, ">= 45%")
                 if size == "full" else "", 100.0),
                (f"{size} {alloc} B={b}: peak RSS", tr.get(f"{k}_peak_rss_gib"),
                 mem_goal if size == "full" else "", 1.0),
            ])  # fmt: skip
    if b20 is not None:
        rows += figure_rows([
            ("full jemalloc B=20 (one step): peak RSS", tr.get("full_b20_peak_rss_gib"),
             _goal(b20, "<=", 16, "batch 20 <= 16 GiB"), 1.0),
            ("full jemalloc B=20 (one step): step seconds", tr.get("full_b20_step_s"), "", 1.0),
        ])  # fmt: skip
    rows += figure_rows([("fp32 matmul ceiling (GFLOP/s)", tr.get("matmul_flops_per_s"), "", 1e-9)])
    out += [
        "## 3. Training (CPU)",
        "",
        _measured_line(tr),
        "Forward + backward + AdamW step (bench/train_bench.py, tuned preset, T=5, one process "
        "per run so that peak RSS (wait4 ru_maxrss) is the run's own), local = 22x32 frames, "
        "full = 440x640 with gradient checkpointing as the tuned preset does at that size. "
        "FLOPs/sample = 3 x forward FLOPs (counted with FlopCounterMode and checked against an "
        "analytic count; checkpointing's recompute is not model work). MFU = FLOPs/sample x "
        "samples/s / the fp32 torch.mm throughput measured in the same run.",
        "",
        markdown_table(
            [
                [
                    s,
                    fmt_num((fl.get(s) or {}).get("forward", 0) / 1e9 or None),
                    fmt_num((fl.get(s) or {}).get("train", 0) / 1e9 or None),
                ]
                for s in ("local", "full")
            ],
            ("scale", "forward GFLOP/sample", "training GFLOP/sample"),
        ),  # fmt: skip
        "",
        markdown_table(rows, FIGURE_HEADER),
        "",
    ]
    if tr.get("full_rss_probe_gib") and est20 is not None:
        probe = ", ".join(f"B={b}: {v:.1f} GiB" for b, v in tr["full_rss_probe_gib"].items())
        out += [
            f"Full-size memory probes ({probe}) extrapolate linearly to "
            f"{est20:.1f} GiB at batch 20; the full-size rows ran batch {fb}.",
            "",
        ]
    if mfu_full is not None and peak is not None:
        out += [
            f"Full size reaches {mfu_full:.0%} of the {peak / 1e9:.0f} GFLOP/s matmul ceiling. "
            "It runs with gradient checkpointing (as the tuned preset does at that size), which "
            "recomputes each frame chunk's forward during the backward: about a third more "
            f"arithmetic than the model FLOPs counted here, so the cores do ~{mfu_full * 4 / 3:.0%} "
            "of the ceiling in useful-plus-recomputed work.",
            "",
        ]

    # 4. end to end
    st = e2e.get("stages_s") or {}
    run_s, test_s = _med(e2e.get("make_run_tuned_wall_s")), _med(e2e.get("make_test_wall_s"))
    rows = figure_rows([("make run PIPELINE=tuned", e2e.get("make_run_tuned_wall_s"),
                         _goal(run_s, "<=", 300, "<= 5 min"), 1.0)])  # fmt: skip
    rows += figure_rows([(f"  stage {k}", v, "", 1.0) for k, v in st.items()])
    rows += figure_rows([("make test", e2e.get("make_test_wall_s"),
                          _goal(test_s, "<=", 600, "<= 10 min"), 1.0)])  # fmt: skip
    out += ["## 4. End to end", "", _measured_line(e2e),
            "Wall time of the two commands a new engineer runs first; per-stage seconds from the "
            "run folder's metrics.json.", "", markdown_table(rows, FIGURE_HEADER), ""]  # fmt: skip
    if e2e.get("note"):
        out += [f"_{e2e['note']}._", ""]

    # 5. GPU
    out += [
        "## 5. GPU",
        "",
        markdown_table(
            [["training samples/s, MFU, memory on a GPU", "not measured (no GPU lent)"]],
            ("figure", "value"),
        ),  # fmt: skip
        "",
    ]
    return "\n".join(out)
