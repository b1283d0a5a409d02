"""The CUDA path, checked and timed in one short run (under 10 minutes on one GPU).

    .venv/bin/python bench/gpu_check.py [--size full] [--samples 501] [--device cuda]

1. Equal results: the same weights and batch through the CPU path (fp32, eager, NCHW and
   channels_last) and the CUDA path the tuned preset trains with (bf16 autocast,
   channels_last, torch.compile with gradient checkpointing: cloudml.model.compile_model):
   eval-mode predictions within a bf16 tolerance, and one training step's loss likewise.
2. Speed: one full-size tuned epoch (501 samples, 5 frames, batch 20; random frames already
   on the GPU, so the figure is the model's, not the loader's), after a compile warm-up; the
   seconds per epoch (goal: <= 1 s on an H200) and MFU against the chip's dense bf16 peak
   (--peak-tflops, default 989 for an H200 SXM). FLOPs per sample come from
   torch.utils.flop_counter on the eager model (forward + backward, no recompute counted).

Prints one JSON document; `--device cpu --size 16x24 --samples 40` runs the same code on a
CPU (the equality checks then compare CPU with CPU: a smoke test of the script itself).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import torch

from cloudml.config import load_config
from cloudml.model import CBHNet, compile_model
from cloudml.training.loop import loss_fn

SIZES = {"full": (440, 640), "local": (22, 32)}


def _net(cfg, frames: int, device: torch.device, checkpoint: bool) -> CBHNet:
    torch.manual_seed(0)
    net = CBHNet(cfg.model, frames).to(device)
    net.use_checkpoint = checkpoint
    return net


def flops_per_sample(cfg, frames: int, hw: tuple[int, int], device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    net = _net(cfg, frames, device, checkpoint=False).train()
    x = torch.randn(2, frames, *hw, device=device)
    s = torch.randn(2, 3, device=device)
    with FlopCounterMode(display=False) as fc:
        loss_fn(net(x, s), torch.zeros(2, device=device), cfg.train).backward()
    return fc.get_total_flops() / 2


def equality(cfg, frames: int, hw: tuple[int, int], device: torch.device) -> dict:
    """CPU fp32 eager vs the device's tuned path on one batch: max relative differences."""
    cpu = _net(cfg, frames, torch.device("cpu"), checkpoint=False)
    dev = copy.deepcopy(cpu).to(device)
    dev.use_checkpoint = cfg.model.gradient_checkpointing
    x = torch.randn(4, frames, *hw)
    s = torch.randn(4, 3)
    y = torch.randn(4)
    cpu.eval()
    dev.eval()
    with torch.no_grad():
        ref = cpu(x, s)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            got = dev(x.to(device), s.to(device)).float().cpu()
    pred_rel = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
    # one training step: eager fp32 on CPU vs compiled + bf16 on the device, both with the
    # same checkpointing (it changes BatchNorm's batch: B frames per chunk, by design);
    # dropout off on both (compiled code draws its own random numbers)
    cpu.use_checkpoint = dev.use_checkpoint
    for net in (cpu, dev):
        for m in net.modules():
            if hasattr(m, "p") and isinstance(m.p, float):
                m.p = 0.0
        net.train()
    model = compile_model(dev, cfg.model.torch_compile_mode) if cfg.model.torch_compile else dev
    loss_ref = loss_fn(cpu(x, s), y, cfg.train)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss_dev = loss_fn(model(x.to(device), s.to(device)).float(), y.to(device), cfg.train)
    loss_dev.backward()
    loss_rel = float(abs(loss_dev.item() - loss_ref.item()) / max(abs(loss_ref.item()), 1e-6))
    return {"pred_max_rel_diff": pred_rel, "train_loss_rel_diff": loss_rel,
            "ok": pred_rel < 5e-2 and loss_rel < 5e-2}  # fmt: skip


def epoch_time(cfg, frames: int, hw: tuple[int, int], samples: int, device: torch.device) -> dict:
    net = _net(cfg, frames, device, checkpoint=cfg.model.gradient_checkpointing).train()
    model = compile_model(net, cfg.model.torch_compile_mode) if cfg.model.torch_compile else net
    opt = torch.optim.AdamW(net.parameters(), lr=5e-4, weight_decay=0.04)
    bs = cfg.train.batch_size
    x = torch.randn(bs, frames, *hw, device=device)
    s = torch.randn(bs, 3, device=device)
    y = torch.randn(bs, device=device)
    sizes = [bs] * (samples // bs) + ([samples % bs] if samples % bs else [])

    def step(n: int) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(model(x[:n], s[:n]).float(), y[:n], cfg.train)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for n in sorted(set(sizes)):  # compile for each batch size the epoch uses
        step(n)
        step(n)
    sync()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for n in sizes:
            step(n)
        sync()
        times.append(time.perf_counter() - t0)
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"epoch_s": sorted(times)[1], "epoch_s_all": times, "warmup_s": warm,
            "peak_gpu_gib": peak_gb}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", default="full")
    ap.add_argument("--samples", type=int, default=501)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the chip")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 1
    hw = SIZES.get(args.size) or tuple(int(v) for v in args.size.split("x"))
    cfg = load_config("tuned")
    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "size": f"{hw[0]}x{hw[1]}", "frames": args.frames,
           "samples": args.samples, "batch": cfg.train.batch_size}  # fmt: skip
    out["equality"] = equality(cfg, args.frames, hw if args.size != "full" else (64, 96), device)
    out["flops_per_sample"] = flops_per_sample(cfg, args.frames, hw, device)
    out.update(epoch_time(cfg, args.frames, hw, args.samples, device))
    achieved = out["flops_per_sample"] * args.samples / out["epoch_s"]
    out["achieved_tflops"] = achieved / 1e12
    out["mfu_vs_bf16_peak"] = achieved / (args.peak_tflops * 1e12)
    print(json.dumps(out, indent=2))
    return 0 if out["equality"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
