"""Where a training step spends its time: torch.profiler over one step, by kind of operator.

    .venv/bin/python bench/profile_step.py [--size 440x640] [--batch 4] [--frames 5]
        [--checkpointing] [--warmup 1]

The step is bench/train_bench.py's (tuned preset, random tensors, AdamW). Self CPU time of
every operator is summed into kinds (`KINDS`, first match wins, by aten name); prints one
JSON line {kind: share of the step, "step_s": profiled step seconds, "top": the ten largest
operators}. With --checkpointing the forward operators also run during the backward (the
recompute), so their kinds include it; bench/run.py times the same step without
checkpointing beside it for the recompute's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

KINDS = (  # (kind, substrings of the lower-cased name); order matters: first match wins
    # autograd's own nodes (MulBackward0, evaluate_function: ...): their self time is the
    # engine's bookkeeping; the aten kernels they call are counted under their own kinds
    ("autograd nodes", ("autograd::", "backward0", "backward1")),
    ("conv backward", ("convolution_backward",)),
    ("conv forward", ("convolution", "conv2d")),
    ("batchnorm", ("batch_norm",)),
    ("max-pool", ("max_pool",)),
    ("matmul / linear", ("addmm", "::mm", "bmm", "matmul", "linear")),
    ("dropout draws", ("rand", "bernoulli", "uniform")),
    ("activations", ("leaky_relu", "sigmoid", "relu", "softmax", "tanh")),
    ("optimizer", ("_foreach", "adamw", "lerp", "addcdiv", "addcmul", "norm")),
    (
        "copies / layout",
        ("copy_", "contiguous", "clone", "aten::empty", "aten::stack", "aten::cat"),
    ),
    ("elementwise", ("mul", "add", "sub", "div", "where", "ge", "threshold")),
)


def kind_of(name: str) -> str:
    """The kind of an operator name ('other' when nothing matches)."""
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def shares(self_us: dict[str, float]) -> dict[str, float]:
    """{kind: share} of per-operator self times (summing to 1 over the kinds present)."""
    total = sum(self_us.values())
    if total <= 0:
        raise ValueError("shares: no operator time recorded")
    out: dict[str, float] = {}
    for name, us in self_us.items():
        k = kind_of(name)
        out[k] = out.get(k, 0.0) + us / total
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def profile(args: argparse.Namespace) -> dict:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from cloudml.config import load_config
    from cloudml.model import CBHNet
    from cloudml.training.loop import loss_fn

    h, w = (int(v) for v in args.size.split("x"))
    cfg = load_config("tuned", {"torch_compile": False})
    torch.manual_seed(0)
    net = CBHNet(cfg.model, args.frames, channels_last=True).train()
    net.use_checkpoint = args.checkpointing
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.04)
    x, s = torch.randn(args.batch, args.frames, h, w), torch.randn(args.batch, 3)
    y = torch.randn(args.batch)

    def step() -> None:
        loss = loss_fn(net(x, s), y, cfg.train)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    for _ in range(args.warmup):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        step()
        step_s = time.perf_counter() - t0
    self_us = {ev.key: ev.self_cpu_time_total for ev in prof.key_averages()
               if ev.self_cpu_time_total > 0}  # fmt: skip
    top = sorted(self_us.items(), key=lambda kv: -kv[1])[:10]
    total = sum(self_us.values())
    return {
        "size": f"{h}x{w}", "batch": args.batch, "frames": args.frames,
        "checkpointing": args.checkpointing, "threads": torch.get_num_threads(),
        "jemalloc": "jemalloc" in os.environ.get("LD_PRELOAD", ""), "step_s": step_s,
        "shares": shares(self_us),
        "top": [[name, us / total] for name, us in top],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="440x640")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--checkpointing", action="store_true")
    print(json.dumps(profile(ap.parse_args())))


if __name__ == "__main__":
    main()
