"""Shared benchmark helpers: machine facts, median/spread, JSON and Markdown writers.

Every figure is a `summarize`d list of runs ({median, min, max, n, runs}) plus the command
that produced it, so the table in docs/benchmarks.md always shows the spread beside the
median and says how to reproduce it. Pure functions except `machine_facts` and the writers.
Table cells are made in doc_tables and the sections of docs/benchmarks.md in doc_sections;
`render_doc` (here) joins them.
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

from doc_research import research_lines
from doc_sections import (
    e2e_lines,
    gpu_lines,
    ingest_lines,
    intro_lines,
    loader_lines,
    precision_lines,
    section,
    train_lines,
)
from doc_tables import NOT_MEASURED, fmt_figure, markdown_table  # noqa: F401  (also common.<name>)

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/run.py`: make `cloudml` importable
    sys.path.insert(0, str(REPO))

from cloudml.fileio import atomic_path  # noqa: E402

JEMALLOC_LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


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


def extrapolate_rss(b1: int, rss1: float, b2: int, rss2: float, batch: int) -> float:
    """Peak RSS at `batch` from two probes, linear in batch (activations scale with B)."""
    if b1 == b2:
        raise ValueError("extrapolate_rss: need two different batch sizes")
    slope = (rss2 - rss1) / (b2 - b1)
    return rss1 + slope * (batch - b1)


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


# --- docs/benchmarks.md --------------------------------------------------------------------
def machine_lines(m: dict[str, Any]) -> list[str]:
    """The Machine section: the facts `machine_facts` collected for this results file."""
    return [
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


def render_doc(results: dict[str, Any]) -> str:
    """The whole docs/benchmarks.md: method prose + one table per section, filled from
    results.json; a section never measured shows 'not measured' cells."""
    out = intro_lines() + machine_lines(results.get("machine", {}))
    out += ingest_lines(section(results, "ingest"))
    out += loader_lines(section(results, "loader"), section(results, "train"))
    out += train_lines(section(results, "train"))
    out += precision_lines(section(results, "precision"))
    out += e2e_lines(section(results, "e2e"))
    out += research_lines(section(results, "research"), section(results, "loader"))
    out += gpu_lines()
    return "\n".join(out)
