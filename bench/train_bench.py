"""Training-step benchmark: samples/s of forward + backward + AdamW step on CPU (or CUDA).

    .venv/bin/python bench/train_bench.py [--size local|full|RxC] [--steps 20] [--batch 20]
        [--frames 5] [--memory-optimized] [--no-channels-last] [--checkpointing] [--compile]
        [--bf16] [--threads N]

`--checkpointing` turns on the model's gradient checkpointing (one chunk of B frames per frame
index, model.encode_per_frame_index) regardless of frame size. `--warmup 0 --steps 1` times a
single step, for full-size batches whose step takes minutes. `--bf16` runs the forward under
the training loop's mixed-precision autocast as mixed_precision_cpu=true sets it
(training.loop._autocast: bf16 on CUDA and on CPUs with native bf16, else float32; the JSON
says which).

Run it twice to compare allocators, e.g.
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \\
    MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 .venv/bin/python bench/train_bench.py
Prints one JSON line (median step time after warm-up steps) and appends it to
build/bench/train.jsonl. `--compile` also reports the compile time (first steps) so that
compile cost can be weighed against the per-step gain.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from cloudml.config import load_config
from cloudml.model import CBHNet, bf16_applies
from cloudml.training.loop import _autocast, loss_fn

SIZES = {"local": (22, 32), "full": (440, 640)}


def step_times(args: argparse.Namespace) -> dict:
    h, w = SIZES.get(args.size) or tuple(int(v) for v in args.size.split("x"))
    cfg = load_config("tuned", {"memory_optimized": args.memory_optimized, "torch_compile": False})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    net = CBHNet(cfg.model, args.frames, channels_last=args.channels_last).to(device).train()
    net.use_checkpoint = args.checkpointing
    model = torch.compile(net) if args.compile else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.04)
    x = torch.randn(args.batch, args.frames, h, w, device=device)
    s = torch.randn(args.batch, 3, device=device)
    y = torch.randn(args.batch, device=device)
    if args.steps < 1 or args.warmup < 0:
        raise SystemExit(f"--steps must be >= 1 and --warmup >= 0, got {args.steps}, {args.warmup}")
    times = []
    t_first = time.perf_counter()
    warm_s = 0.0
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        amp = _autocast(device, True, on_cpu=True) if args.bf16 else contextlib.nullcontext()
        with amp:
            out = model(x, s)
        loss = loss_fn(out.float(), y, cfg.train)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i == args.warmup - 1:
            warm_s = time.perf_counter() - t_first
        dt_s = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt_s)
        print(f"step {i + 1}/{args.warmup + args.steps}: {dt_s:.1f} s", file=sys.stderr, flush=True)
    med = statistics.median(times)
    return {
        "size": f"{h}x{w}", "batch": args.batch, "frames": args.frames, "device": str(device),
        "threads": torch.get_num_threads(), "memory_optimized": args.memory_optimized,
        "channels_last": args.channels_last, "checkpointing": args.checkpointing,
        "compile": args.compile, "bf16": bool(args.bf16 and bf16_applies(device.type, True)),
        "jemalloc": "jemalloc" in os.environ.get("LD_PRELOAD", ""),
        "step_s_median": round(med, 4), "step_s_min": round(min(times), 4),
        "samples_per_s": round(args.batch / med, 1), "steps": args.steps,
        "warmup_steps_s": round(warm_s, 2) if args.warmup else None,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="local", help="local (22x32), full (440x640) or RxC")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--memory-optimized", action="store_true")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="mixed-precision autocast (see above)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = step_times(args)
    line = json.dumps(res)
    print(line)
    out = Path("build/bench/train.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()
