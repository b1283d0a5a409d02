"""Model FLOPs and the machine's fp32 matmul throughput: the two halves of MFU.

    .venv/bin/python bench/mfu.py [--size 440x640] [--frames 5] [--memory-optimized]

Training FLOPs per sample = 3 x forward FLOPs (forward + backward, no recompute: gradient
checkpointing's extra forward is overhead, not model work). Forward FLOPs are counted two
independent ways, torch.utils.flop_counter.FlopCounterMode (convolutions, matmuls, attention)
and `analytic_forward_flops` (the same layers from the architecture), and must agree.
MFU = FLOPs/sample x samples/s / (large torch.mm FLOP/s measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import time

import common  # noqa: F401  (puts the repo on sys.path)
import torch
from torch.utils.flop_counter import FlopCounterMode

from cloudml.config import ModelConfig, load_config
from cloudml.model import N_SCALARS, CBHNet, channel_widths, head_widths


def conv2d_flops(c_in: int, c_out: int, k: int, h: int, w: int) -> int:
    """2 x MACs of a stride-1 'same' k x k conv over an h x w map (bias not counted)."""
    return 2 * c_in * c_out * k * k * h * w


def linear_flops(d_in: int, d_out: int) -> int:
    return 2 * d_in * d_out


def analytic_forward_flops(cfg: ModelConfig, frames: int, h: int, w: int) -> int:
    """Forward FLOPs of one sample (T frames of h x w) from the architecture
    (docs/physics.md, 'The model').

    Counts what FlopCounterMode counts: convolutions and matmuls (2 per MAC); elementwise,
    BatchNorm, pooling and softmax are left out (a few % of the total, memory-bound anyway).
    Supports the default temporal attention or none (multiscale is not counted here).
    """
    if cfg.use_multiscale_temporal:
        raise NotImplementedError("analytic count covers TemporalAttention / mean only")
    c1, c2, c3 = channel_widths(cfg)
    d1, d2 = head_widths(cfg)
    per_frame = 0
    if cfg.use_spatial_attention:  # conv3x3 1->8, conv1x1 8->1
        per_frame += conv2d_flops(1, 8, 3, h, w) + conv2d_flops(8, 1, 1, h, w)
    per_frame += linear_flops(N_SCALARS, 64) + linear_flops(64, 2 * c1)  # FiLM MLP
    hh, ww = h, w
    for c_in, c_out in ((1, c1), (c1, c2), (c2, c3)):
        per_frame += conv2d_flops(c_in, c_out, 3, hh, ww)
        hh, ww = hh // 2, ww // 2  # 2x2 max-pool
    total = frames * per_frame
    if cfg.use_temporal_attention:  # score MLP per frame: c3 -> c3/4 -> 1
        total += frames * (linear_flops(c3, c3 // 4) + linear_flops(c3 // 4, 1))
    total += linear_flops(c3, d1) + linear_flops(d1, d2) + linear_flops(d2, 1)
    return total


def counted_forward_flops(cfg: ModelConfig, frames: int, h: int, w: int, batch: int = 2) -> int:
    """Forward FLOPs per sample as FlopCounterMode sees them (train-mode forward).

    Runs on the meta device: shapes propagate, nothing is computed, so full size is instant.
    """
    net = CBHNet(cfg, frames).to("meta")
    x = torch.zeros(batch, frames, h, w, device="meta")
    s = torch.zeros(batch, N_SCALARS, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x, s)
    return counter.get_total_flops() // batch


def train_flops_per_sample(forward_flops: int) -> int:
    """Forward + backward = 3 x forward (backward computes grads of inputs and weights)."""
    return 3 * forward_flops


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> list[float]:
    """FLOP/s of (n x n) @ (n x n) fp32 torch.mm, one value per repeat (after a warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up: thread pool, page faults
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        rates.append(2 * n**3 / (time.perf_counter() - t0))
    return rates


def mfu(samples_per_s: float, flops_per_sample: float, peak_flops_per_s: float) -> float:
    """Model-FLOP utilisation as a fraction of the measured matmul throughput."""
    if peak_flops_per_s <= 0:
        raise ValueError("mfu: peak FLOP/s must be positive")
    return samples_per_s * flops_per_sample / peak_flops_per_s


def parse_size(size: str) -> tuple[int, int]:
    """'local' -> 22x32 (the local shard), 'full' -> 440x640 (swath-sliced), or 'RxC'."""
    named = {"local": (22, 32), "full": (440, 640)}
    if size in named:
        return named[size]
    try:
        r, c = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size: expected local, full or RxC, got {size!r}") from None
    return r, c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="full")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--memory-optimized", action="store_true")
    ap.add_argument("--matmul-n", type=int, default=2048)
    args = ap.parse_args(argv)
    h, w = parse_size(args.size)
    cfg = load_config("tuned", {"memory_optimized": args.memory_optimized}).model
    fwd = counted_forward_flops(cfg, args.frames, h, w)
    rates = matmul_flops_per_s(args.matmul_n)
    print(json.dumps({
        "size": f"{h}x{w}", "frames": args.frames,
        "forward_flops_counted": fwd,
        "forward_flops_analytic": analytic_forward_flops(cfg, args.frames, h, w),
        "train_flops_per_sample": train_flops_per_sample(fwd),
        "matmul_gflops": [round(r / 1e9, 1) for r in rates],
        "threads": torch.get_num_threads(),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
