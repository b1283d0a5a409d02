"""Child processes of bench/run.py: run one with its peak RSS measured, read its JSON line.

Every child runs in the repository root with stdout in build/bench/logs/<name>.log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from common import REPO

LOGS = REPO / "build/bench/logs"
PY = sys.executable


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
    """res itself when the child exited 0; else a RuntimeError naming `what` and its log."""
    if res["rc"] != 0:
        raise RuntimeError(f"{what} exited with {res['rc']} (see {res['log']})")
    return res


SIZES = {"local": "22x32", "full": "440x640"}


def child_samples_per_s(rec: dict[str, Any]) -> float:
    """batch / median step seconds of a train_bench record (its own samples_per_s is
    rounded to 0.1: 0.3 at full size)."""
    return rec["batch"] / rec["step_s_median"]


def train_child(size: str, batch: int, steps: int, warmup: int, env: dict[str, str],
                tag: str, checkpointing: bool | None = None,
                bf16: bool = False) -> dict[str, Any]:  # fmt: skip
    """One bench/train_bench.py process: its JSON line plus peak RSS and the command.
    `checkpointing` None: on at full size, as the tuned preset does there
    (model.configure_checkpointing); `bf16`: the loop's mixed-precision autocast."""
    args = ["--size", SIZES[size], "--batch", str(batch), "--frames", "5",
            "--steps", str(steps), "--warmup", str(warmup)]  # fmt: skip
    ckpt = size == "full" if checkpointing is None else checkpointing
    if ckpt:
        args.append("--checkpointing")
    if bf16:
        args.append("--bf16")
    res = checked(run_child([PY, "bench/train_bench.py", *args], env, f"train-{tag}"),
                  f"train_bench {tag}")  # fmt: skip
    rec = last_json_line(res["stdout"])
    rec["peak_rss_bytes"] = res["peak_rss_bytes"]
    rec["command"] = "bench/train_bench.py " + " ".join(args)
    return rec
