"""Section research: the research team's own code beside ours, in the same sitting.

The research code (rylanmalarchick/cloudMLPublic, `src/`) is never in this repository. A
user exports it to a scratch directory with its own virtualenv and points three variables
at it (how: ../shared/research-bench/README.md, and docs/benchmarks.md section 5):

  RESEARCH_BENCH  folder with bench_original.py, run_with_tvshim.py, make_synthetic_flights.py
  ORIG_CLOUDML    the research checkout: the directory that contains src/
  RESEARCH_PY     the python of the research virtualenv (its torch must be ours: 2.13.0+cpu)

Without them `make bench` leaves the section's last figures as they are. With them, rounds
alternate one side and the other, each run its own process (peak RSS from wait4):

  full   random tensors of 440x640, 5 frames, batch 4, checkpointing on both sides (the
         tuned presets), under jemalloc and glibc malloc;
  local  random 22x32 tensors, 5 frames, batch 20 (research: --image-hw 22 32), jemalloc;
  loader the research DataLoader over its own schema (2 workers, augment on, full size,
         jemalloc), against the production loader figure of section 2 (also jemalloc)
         measured by the same make bench.

MFU on both sides uses each network's own FLOP count (the research one from its `flops`
command) and the fp32 matmul ceiling measured here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from children import SIZES, checked, child_samples_per_s, run_child, train_child
from common import figure, glibc_env, jemalloc_env, ratio_figure, summarize

ENV_VARS = ("RESEARCH_BENCH", "ORIG_CLOUDML", "RESEARCH_PY")
SCRATCH_VAR = "RESEARCH_SCRATCH"  # research-schema flight files (no '.' in the path)
DEFAULT_SCRATCH = "/tmp/cloudml_research_bench"
FRAMES = 5


def configured(env: dict[str, str] | None = None) -> dict[str, str] | None:
    """The three paths when all are set and exist, None when none is set; a ValueError
    naming the variable when only some are, or one points nowhere."""
    env = dict(os.environ if env is None else env)
    given = {k: env.get(k, "").strip() for k in ENV_VARS}
    if not any(given.values()):
        return None
    missing = [k for k, v in given.items() if not v]
    if missing:
        raise ValueError(f"research bench: set {', '.join(missing)} too (or none of {ENV_VARS})")
    checks = {
        "RESEARCH_BENCH": Path(given["RESEARCH_BENCH"]) / "bench_original.py",
        "ORIG_CLOUDML": Path(given["ORIG_CLOUDML"]) / "src" / "hdf5_dataset.py",
        "RESEARCH_PY": Path(given["RESEARCH_PY"]),
    }
    for key, path in checks.items():
        if not path.is_file():
            raise ValueError(f"research bench: {key}={given[key]}: {path} not found")
    return given


def scratch_dir(env: dict[str, str] | None = None) -> Path:
    """Where the research-schema flight goes; the research reader takes the flight's year
    from the path before its first '.', so a '.' anywhere in it is refused."""
    env = dict(os.environ if env is None else env)
    p = Path(env.get(SCRATCH_VAR) or DEFAULT_SCRATCH)
    if "." in str(p):
        raise ValueError(f"research bench: {SCRATCH_VAR}={p}: the path must not contain '.'")
    return p


def result_line(stdout: str) -> dict[str, Any]:
    """The research bench's `RESULT {json}` line (the last one)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise ValueError("research bench printed no RESULT line")


def research_env(base: dict[str, str], paths: dict[str, str]) -> dict[str, str]:
    return {**base, "ORIG_CLOUDML": paths["ORIG_CLOUDML"]}


def research_cmd(paths: dict[str, str], cfg: Path, *args: str) -> list[str]:
    """A run_with_tvshim.py command line (torchvision transforms without their CUDA ops)."""
    shim = str(Path(paths["RESEARCH_BENCH"]) / "run_with_tvshim.py")
    threads = str(len(os.sched_getaffinity(0)))
    return [paths["RESEARCH_PY"], shim, "--config", str(cfg), "--threads", threads, *args]


def prepare(paths: dict[str, str], scratch: Path) -> tuple[Path, Path]:
    """(research config YAML with 5 frames, flight folder), the flight written once."""
    scratch.mkdir(parents=True, exist_ok=True)
    cfg = scratch / "tuned_5_frames.yaml"
    cfg.write_text(f"temporal_frames: {FRAMES}\n")  # the rest: bench_original's tuned values
    data = scratch / "full"
    if not (data / "flights.json").is_file():
        gen = [paths["RESEARCH_PY"], str(Path(paths["RESEARCH_BENCH"]) / "make_synthetic_flights.py"),
               "--out", str(data), "--flights", "1"]  # fmt: skip
        checked(run_child(gen, dict(os.environ), "research-gen"), "make_synthetic_flights.py")
    return cfg, data


def paired_train(paths, cfg, data, alloc_env, name, batch, steps, rounds, tag):
    """`rounds` alternating (ours, research) runs: samples/s and peak RSS of each side."""
    h, w = SIZES[name].split("x")
    r_args = ["train", "--data", str(data), "--source", "random", "--batch-size", str(batch),
              "--steps", str(steps + 1), "--image-hw", h, w]  # fmt: skip
    warm = 1 if name == "full" else 3
    ours, theirs = {"sps": [], "rss": []}, {"sps": [], "rss": []}
    for i in range(rounds):
        rec = train_child(name, batch, steps, warm, alloc_env, f"rs-ours-{tag}-{i}")
        ours["sps"].append(child_samples_per_s(rec))
        ours["rss"].append(rec["peak_rss_bytes"] / 2**30)
        r = checked(run_child(research_cmd(paths, cfg, *r_args), research_env(alloc_env, paths),
                              f"rs-research-{tag}-{i}"), f"research train {tag}")  # fmt: skip
        theirs["sps"].append(result_line(r["stdout"])["samples_per_s_excl_first"])
        theirs["rss"].append(r["peak_rss_bytes"] / 2**30)
        print(f"research side {tag} round {i + 1}: ours {ours['sps'][-1]:.3g}, research "
              f"{theirs['sps'][-1]:.3g} samples/s", flush=True)  # fmt: skip
    return ours, theirs


def research_flops(paths: dict[str, str], cfg: Path) -> dict[str, float]:
    """Training FLOPs per sample of the research network (its own count), per size."""
    r = checked(run_child(research_cmd(paths, cfg, "flops", "--shapes", "440x640", "22x32"),
                          research_env(jemalloc_env(), paths), "rs-research-flops"),
                "research flops")  # fmt: skip
    rows = [row for row in result_line(r["stdout"])["rows"] if not row["memory_optimized"]]
    return {f"{row['image_shape'][1]}x{row['image_shape'][2]}":
            3 * row["fwd_gflop_per_sample_nockpt"] * 1e9 for row in rows}  # fmt: skip


def bench_research(repeats: int, full_repeats: int, quick: bool) -> dict[str, Any] | None:
    """The section's figures; None when the research code is not configured."""
    import mfu as mfu_mod

    from cloudml.config import load_config

    paths = configured()
    if paths is None:
        return None
    cfg, data = prepare(paths, scratch_dir())
    peak = mfu_mod.matmul_flops_per_s(1024 if quick else 2048, repeats=3 if quick else 7)
    peak_med = summarize(peak)["median"]
    model_cfg = load_config("tuned").model
    ours_flops = {}
    for size in ("440x640", "22x32"):
        h, w = (int(v) for v in size.split("x"))
        ours_flops[size] = mfu_mod.train_flops_per_sample(
            mfu_mod.counted_forward_flops(model_cfg, FRAMES, h, w)
        )
    theirs_flops = research_flops(paths, cfg)
    out: dict[str, Any] = {
        "matmul_flops_per_s": figure(peak, "FLOP/s", "bench/mfu.py (in bench/research_side.py)"),
        "train_flops": {"ours": ours_flops, "research": theirs_flops},
        "research_commit_dir": paths["ORIG_CLOUDML"],
    }
    plan = [("full", "440x640", 4, 1 if quick else 2, 1 if quick else full_repeats),
            ("local", "22x32", 20, 3 if quick else 20, 1 if quick else repeats)]  # fmt: skip
    for alloc, env in (("jemalloc", jemalloc_env()), ("glibc", glibc_env())):
        for name, size, batch, steps, rounds in plan:
            if name == "local" and alloc == "glibc":
                continue
            key = f"{name}_{alloc}"
            ours, theirs = paired_train(paths, cfg, data, env, name, batch, steps, rounds, key)
            cmd = f"bench/research_side.py: {rounds} alternating rounds, B={batch}, {size}"
            for side, rec in (("ours", ours), ("research", theirs)):
                out[f"{key}_{side}_samples_per_s"] = figure(rec["sps"], "samples/s", cmd)
                out[f"{key}_{side}_peak_rss_gib"] = figure(rec["rss"], "GiB", cmd)
                flops = (ours_flops if side == "ours" else theirs_flops)[size]
                out[f"{key}_{side}_mfu"] = figure(
                    [mfu_mod.mfu(s, flops, peak_med) for s in rec["sps"]], "fraction", cmd
                )
            out[f"{key}_ratio"] = ratio_figure(ours["sps"], theirs["sps"], "x", cmd)
    n = 100 if quick else 300
    loads = []
    for i in range(1 if quick else repeats):
        r = checked(run_child(research_cmd(paths, cfg, "loader", "--data", str(data), "--workers",
                                           "2", "--samples", str(n)),
                              research_env(jemalloc_env(), paths), f"rs-research-loader-{i}"),
                    "research loader")  # fmt: skip
        loads.append(result_line(r["stdout"])["samples_per_s_excl_first_batch"])
    out["loader_research_samples_per_s"] = figure(
        loads, "samples/s", f"bench_original.py loader --workers 2 --samples {n} (jemalloc)"
    )
    return out
