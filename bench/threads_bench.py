"""Training throughput under one competing busy process, per thread setting.

    .venv/bin/python bench/threads_bench.py [--size local] [--steps 30] [--repeats 3]

For each setting (OpenMP's default spin-wait with every core; OMP_WAIT_POLICY=PASSIVE;
one thread fewer than the cores), runs bench/train_bench.py quiet and then beside one busy
process (a pure-Python spin loop: a competitor that never yields, like another job's
training step). Prints one JSON line per setting with the medians and the ratio
contended / quiet, and appends them to build/bench/threads.jsonl. Settings alternate within
each repeat so drift hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPIN = "while True: pass"


def settings(cores: int) -> dict[str, dict[str, str]]:
    return {
        "default (active wait)": {"OMP_WAIT_POLICY": "ACTIVE"},
        "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
        f"{max(1, cores - 1)} thread(s), passive": {
            "OMP_WAIT_POLICY": "PASSIVE",
            "CLOUDML_THREADS": str(max(1, cores - 1)),
        },  # fmt: skip
    }


def one(env_extra: dict[str, str], args: argparse.Namespace, busy: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(env_extra)
    threads = env_extra.get("CLOUDML_THREADS") or str(os.cpu_count() or 1)
    env["OMP_NUM_THREADS"] = threads
    cmd = [sys.executable, str(REPO / "bench/train_bench.py"), "--size", args.size,
           "--steps", str(args.steps), "--threads", threads]  # fmt: skip
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return float(json.loads(out.strip().splitlines()[-1])["samples_per_s"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="local")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    runs: dict[str, dict[str, list[float]]] = {
        name: {"quiet": [], "busy": []} for name in settings(cores)
    }
    for r in range(args.repeats):
        for name, extra in settings(cores).items():
            for busy in (False, True):
                sps = one(extra, args, busy)
                runs[name]["busy" if busy else "quiet"].append(sps)
                print(f"repeat {r + 1}: {name}, {'busy' if busy else 'quiet'}: {sps} samples/s",
                      file=sys.stderr, flush=True)  # fmt: skip
    out = REPO / "build/bench/threads.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, got in runs.items():
        q, b = statistics.median(got["quiet"]), statistics.median(got["busy"])
        row = {"setting": name, "size": args.size, "cores": cores, "quiet_sps": q,
               "busy_sps": b, "kept": round(b / q, 3), "runs": got}  # fmt: skip
        print(json.dumps(row))
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
