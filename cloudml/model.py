"""The research network (docs/physics.md, 'The model'): per-frame CNN with spatial attention
and FiLM from the sun geometry, temporal attention across frames, a small regression head.
No I/O here.

    net = CBHNet(cfg.model, temporal_frames=5)
    y = net(frames, scalars)  # (B, T, H, W), (B, N_SCALARS) -> (B,) standardised CBH

Scalars per sample (built by `encode_scalars`): standardised SZA, sin(SAA), cos(SAA).
SAA is an angle: fed linearly, 359 deg and 1 deg would sit at opposite ends of the input
range although the sun is in the same place; sin/cos are continuous, already unit-scale, and
the mirror augmentation (SAA -> 360 - SAA) becomes an exact sign flip of sin(SAA).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cloudml.config import ModelConfig
from cloudml.errors import ConfigError

log = logging.getLogger(__name__)

N_SCALARS = 3  # z(SZA), sin(SAA), cos(SAA)
# Below this many pixels per frame a batch's activations are small: recomputing them
# (gradient checkpointing) only costs time. See configure_checkpointing.
CHECKPOINT_MIN_PIXELS = 128 * 128


def channel_widths(cfg: ModelConfig) -> tuple[int, int, int]:
    """Conv block widths: 64/128/256, or 32/64/128 when memory_optimized."""
    return (32, 64, 128) if cfg.memory_optimized else (64, 128, 256)


def head_widths(cfg: ModelConfig) -> tuple[int, int]:
    """Dense head widths: 256 -> 128, or 128 -> 64 when memory_optimized."""
    return (128, 64) if cfg.memory_optimized else (256, 128)


def encode_scalars(
    sza_deg: torch.Tensor, saa_deg: torch.Tensor, sza_mean: float, sza_std: float
) -> torch.Tensor:
    """(B,), (B,) degrees -> (B, 3): [z(SZA), sin(SAA), cos(SAA)] (see module docstring)."""
    saa = torch.deg2rad(saa_deg)
    return torch.stack([(sza_deg - sza_mean) / sza_std, torch.sin(saa), torch.cos(saa)], dim=1)


class SpatialAttention(nn.Module):
    """conv3x3 -> ReLU -> conv1x1 -> sigmoid, multiplied into the frame."""

    def __init__(self, hidden: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 1, H, W)
        return x * torch.sigmoid(self.conv2(F.relu(self.conv1(x))))


class FastDropout(nn.Module):
    """nn.Dropout's function (zero with probability p, scale the rest by 1/(1-p), identity
    in eval mode) from a uniform draw: `bernoulli_` fills its mask one element at a time
    and took ~10% of a local-scale training step; `rand_like` is vectorised (2.2x faster
    at (100, 64, 13, 20), bench/train_bench.py). The mask keeps the input's memory layout."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"dropout p: must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ConvBlock(nn.Module):
    """3x3 conv, BatchNorm, [FiLM], LeakyReLU(0.01), 2x2 max-pool, dropout 0.25.

    Activations are channels_last (NHWC). The frame enters with one channel, where NCHW and
    NHWC are the same strides and oneDNN then picks NCHW for everything after it: the whole
    network ran NCHW, and CPU max-pool in NCHW was 14x slower than in NHWC (13% of a step).
    So the conv output is made channels_last explicitly (a no-op after the first block)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.drop = FastDropout(0.25)
        self.channels_last = True  # CBHNet(channels_last=False) turns it off for an A/B

    def forward(self, x: torch.Tensor, film: torch.Tensor | None = None) -> torch.Tensor:
        # The shift and the activation run in place on tensors no backward formula reads
        # (BatchNorm saves its input, mul its operands, leaky_relu_ its result): the same
        # values as out-of-place ops, one (N, C, H, W) buffer fewer live at a time.
        x = self.conv(x)  # (N, C, H, W)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.bn(x)
        if film is not None:  # (N, 2C): per-frame scale and shift from the sun geometry
            gamma, beta = film.chunk(2, dim=1)
            x = x * (1 + gamma[:, :, None, None])
            x += beta[:, :, None, None]
        return self.drop(F.max_pool2d(F.leaky_relu_(x, 0.01), 2))


class FrameEncoder(nn.Module):
    """One frame + its scalars -> a feature vector: (N, 1, H, W), (N, S) -> (N, C3)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c1, c2, c3 = channel_widths(cfg)
        self.attn = SpatialAttention() if cfg.use_spatial_attention else None
        self.film = nn.Sequential(nn.Linear(N_SCALARS, 64), nn.ReLU(), nn.Linear(64, 2 * c1))
        # FiLM starts as the identity (gamma = beta = 0) so the conv path trains undisturbed
        nn.init.zeros_(self.film[2].weight)
        nn.init.zeros_(self.film[2].bias)
        self.blocks = nn.ModuleList([ConvBlock(1, c1), ConvBlock(c1, c2), ConvBlock(c2, c3)])

    def forward(self, x: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            x = self.attn(x)
        x = self.blocks[0](x, self.film(scalars))  # (N, C1, H/2, W/2)
        x = self.blocks[1](x)  # (N, C2, H/4, W/4)
        x = self.blocks[2](x)  # (N, C3, H/8, W/8)
        return x.mean(dim=(2, 3))  # global average pool -> (N, C3)


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers of `module` update throwaway copies of their running statistics
    (running_mean/var, num_batches_tracked), for checkpoint recomputes whose forward already
    updated the real ones. Copies, not track_running_stats=False: that would save fewer
    tensors for backward than the forward did, which checkpoint rejects."""
    names = ("running_mean", "running_var", "num_batches_tracked")
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    real = [{n: getattr(m, n) for n in names} for m in bns]
    for m, bufs in zip(bns, real, strict=True):
        for n, buf in bufs.items():
            if buf is not None:
                setattr(m, n, buf.clone())
    try:
        yield
    finally:
        for m, bufs in zip(bns, real, strict=True):
            for n, buf in bufs.items():
                setattr(m, n, buf)


def encode_per_frame_index(
    encoder: FrameEncoder, frames: torch.Tensor, scalars: torch.Tensor
) -> torch.Tensor:
    """Gradient-checkpointed encoding, one chunk per frame index t (docs/physics.md, 'The model'):
    (B, T, H, W), (B, S) -> (B, T, C3).

    Each chunk (the B frames at index t) runs the whole encoder under one checkpoint, so
    only its (B, C3) features are kept and the backward rebuilds one chunk's activations at
    a time: peak memory scales with B, not B*T. BatchNorm therefore normalises over the B
    frames of a chunk (as the research code's per-frame loop did), not over all B*T frames
    as the unchunked path does; eval mode is the same either way. The recompute replays
    the saved RNG state (same dropout masks) and leaves BatchNorm running stats alone
    (`frozen_bn_stats`): each chunk updates them once, in its forward.
    """

    def contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        return contextlib.nullcontext(), frozen_bn_stats(encoder)  # (forward, recompute)

    feats = []
    for t in range(frames.shape[1]):
        x = frames[:, t : t + 1].contiguous(memory_format=torch.channels_last)  # (B, 1, H, W)
        feats.append(checkpoint(encoder, x, scalars, use_reentrant=False, context_fn=contexts))
    return torch.stack(feats, dim=1)  # (B, T, C3)


class TemporalAttention(nn.Module):
    """MLP score per frame, softmax over frames, weighted sum: (B, T, C) -> (B, C)."""

    def __init__(self, c: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(c, c // 4), nn.Tanh(), nn.Linear(c // 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.score(x), dim=1)  # (B, T, 1)
        return (w * x).sum(dim=1)


class MultiScaleTemporal(nn.Module):
    """1/2/3-frame convolutions over time; their outputs (T + T-1 + T-2 tokens of width C)
    are concatenated as one token sequence, self-attended, mean-pooled and projected back."""

    def __init__(self, c: int, heads: int, n_frames: int):
        super().__init__()
        self.kernels = [k for k in (1, 2, 3) if k <= n_frames]
        self.convs = nn.ModuleList(nn.Conv1d(c, c, k) for k in self.kernels)
        self.mha = nn.MultiheadAttention(c, heads, batch_first=True)
        self.proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        xc = x.transpose(1, 2)  # (B, C, T)
        tokens = torch.cat([conv(xc) for conv in self.convs], dim=2).transpose(1, 2)  # (B, L, C)
        att, _ = self.mha(tokens, tokens, tokens, need_weights=False)
        return self.proj(att.mean(dim=1))  # (B, C)


class CBHNet(nn.Module):
    """(B, T, H, W) frames + (B, N_SCALARS) -> (B,) standardised cloud-base height."""

    def __init__(self, cfg: ModelConfig, temporal_frames: int, channels_last: bool = True):
        super().__init__()
        if temporal_frames < 1:
            raise ConfigError(f"temporal_frames: must be >= 1, got {temporal_frames}")
        self.cfg = cfg
        self.temporal_frames = temporal_frames
        c3 = channel_widths(cfg)[2]
        d1, d2 = head_widths(cfg)
        self.encoder = FrameEncoder(cfg)
        if not cfg.use_temporal_attention:
            self.temporal: nn.Module | None = None  # mean over frames
        elif cfg.use_multiscale_temporal:
            self.temporal = MultiScaleTemporal(c3, cfg.attention_heads, temporal_frames)
        else:
            self.temporal = TemporalAttention(c3)
        self.head = nn.Sequential(
            nn.Linear(c3, d1), nn.BatchNorm1d(d1), nn.LeakyReLU(0.01), nn.Dropout(0.5),
            nn.Linear(d1, d2), nn.BatchNorm1d(d2), nn.LeakyReLU(0.01), nn.Dropout(0.3),
            nn.Linear(d2, 1),
        )  # fmt: skip
        self.use_checkpoint = False  # set by `configure_checkpointing`
        for m in self.modules():
            if isinstance(m, ConvBlock):
                m.channels_last = channels_last
        if channels_last:  # conv weights NHWC too: oneDNN's direct NHWC kernels (-10% a step)
            self.to(memory_format=torch.channels_last)

    def forward(self, frames: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        b, t, h, w = frames.shape
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            feats = encode_per_frame_index(self.encoder, frames, scalars)  # (B, T, C3)
        else:
            # every frame of the batch in one call: (B*T, 1, H, W); scalars repeated per frame
            x = frames.reshape(b * t, 1, h, w).contiguous(memory_format=torch.channels_last)
            s = scalars.repeat_interleave(t, dim=0)  # (B*T, S)
            feats = self.encoder(x, s).reshape(b, t, -1)  # (B, T, C3)
        z = feats.mean(dim=1) if self.temporal is None else self.temporal(feats)  # (B, C3)
        return self.head(z).squeeze(1)  # (B,)


def configure_checkpointing(net: CBHNet, frame_shape: tuple[int, int]) -> bool:
    """Honour gradient_checkpointing only where it saves memory worth having (big frames).

    Measured at 28x40, batch 20, T=5 (bench/train_bench.py --checkpointing): peak RSS 0.58 GB
    with and without it (nothing saved) and a slower step (median 7.4 s vs 5.9 s on the
    loaded 2-core CPU), so below CHECKPOINT_MIN_PIXELS it is skipped with one log line.
    """
    want = net.cfg.gradient_checkpointing
    pixels = frame_shape[0] * frame_shape[1]
    net.use_checkpoint = want and pixels >= CHECKPOINT_MIN_PIXELS
    if want and not net.use_checkpoint:
        log.info(
            "gradient_checkpointing skipped: %dx%d frames (< %d px) hold a few MB of "
            "activations; recomputing them would only slow the step",
            *frame_shape, CHECKPOINT_MIN_PIXELS,
        )  # fmt: skip
    return net.use_checkpoint


def maybe_compile(net: CBHNet, device: torch.device) -> nn.Module:
    """torch.compile as configured on CUDA; on CPU it is skipped with the measured reason."""
    if not net.cfg.torch_compile:
        return net
    if device.type != "cuda":
        log.info(
            "torch_compile skipped on CPU: measured at 28x40, batch 20, T=5 (bench/train_bench.py "
            "--compile) compiling cost ~260 s for <=1.2x per step, and train, eval and the last "
            "short batch each compile again; on CUDA it is honoured"
        )
        return net
    return compile_model(net, net.cfg.torch_compile_mode)


@functools.cache
def cpu_bf16_native() -> bool:
    """Whether this CPU runs oneDNN's bf16 kernels natively: AVX512-BF16 or AMX, and oneDNN
    may use them (ONEDNN_MAX_CPU_ISA). Elsewhere oneDNN emulates bf16: under
    ONEDNN_MAX_CPU_ISA=AVX2 the two large local-scale convolutions' forward + backward ran
    16-20x slower in bf16 than in float32 (median of 8 steps each, this EPYC), so there
    mixed_precision_cpu falls back to float32."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def bf16_applies(device_type: str, on_cpu: bool) -> bool:
    """Whether mixed_precision's bf16 autocast runs on `device_type` ('cuda' or 'cpu') here:
    on CUDA always; on CPU only when asked (`on_cpu`: mixed_precision_cpu) and bf16 is
    native (cpu_bf16_native)."""
    return device_type == "cuda" or (device_type == "cpu" and on_cpu and cpu_bf16_native())


def compile_model(net: CBHNet, mode: str) -> nn.Module:
    """`net` compiled with torch.compile; the checkpointed path compiles its encoder only.

    Dynamo cannot trace `torch.utils.checkpoint` with a custom `context_fn` (it raises
    "checkpoint not implemented for NestedUserFunctionVariable context_fn"), and
    `encode_per_frame_index` needs one: the recompute must leave BatchNorm's running
    statistics alone (`frozen_bn_stats`). So with checkpointing on, the encoder (the
    convolutions: nearly all of a step's FLOPs) is compiled in place and the checkpoint
    around it stays eager; each chunk's forward and its recompute run the compiled encoder.
    Compiled in place (`nn.Module.compile`), the state_dict keys stay the same as eager's.
    Without checkpointing the whole network is compiled (a wrapper module, `_orig_mod`).
    """
    if net.use_checkpoint:
        net.encoder.compile(mode=mode)
        return net
    return torch.compile(net, mode=mode)


@dataclass(frozen=True)
class SettingInEffect:
    """A speed/memory setting as configured and as it applied to a run."""

    key: str
    configured: bool
    in_effect: bool | None  # None: the run did not record what decides it
    why: str  # the reason it differs from the config ("" when it does not)


def _bf16_in_effect(
    config: Mapping[str, Any], device_type: str | None, cpu_bf16: bool | None
) -> tuple[bool | None, str]:
    """(in effect, why not) for mixed_precision: see settings_in_effect."""
    if device_type is None:
        return None, "bf16 autocast needs CUDA or a CPU asked for it: the device was not recorded"
    if device_type == "cuda":
        return True, ""
    if not config.get("mixed_precision_cpu", False):
        return False, "bf16 autocast is off on CPU (mixed_precision_cpu: false), so float32"
    if cpu_bf16 is None:
        return (
            None,
            "mixed_precision_cpu is on: whether this run's CPU has native bf16 was not recorded",
        )
    if not cpu_bf16:
        return False, (
            "mixed_precision_cpu needs a CPU with native bf16 (AVX512-BF16 or AMX): this run's "
            "CPU has none, so float32"
        )
    return True, ""


def settings_in_effect(
    config: Mapping[str, Any],
    device_type: str | None,
    frame_shape: tuple[int, int] | None,
    cpu_bf16: bool | None = None,
) -> list[SettingInEffect]:
    """mixed_precision, torch_compile and gradient_checkpointing as the training code applies
    them (pure; `config` is Config.flat() or a run's config JSON): bf16 autocast on CUDA, and
    on CPU only with mixed_precision_cpu and native bf16 (`cpu_bf16`, what cpu_bf16_native
    said on the run's CPU; training.loop._autocast), torch.compile only on CUDA
    (maybe_compile), checkpointing only for frames of at least CHECKPOINT_MIN_PIXELS
    (configure_checkpointing). A decider that is None (not recorded) leaves in_effect
    unknown for the settings it decides."""
    on_cuda = None if device_type is None else device_type == "cuda"
    bf16, bf16_why = _bf16_in_effect(config, device_type, cpu_bf16)
    big = None if frame_shape is None else frame_shape[0] * frame_shape[1] >= CHECKPOINT_MIN_PIXELS
    cpu = "this run was on CPU" if on_cuda is False else "the device was not recorded"
    px = f"used only for frames of at least {CHECKPOINT_MIN_PIXELS} px"
    rules = (
        ("mixed_precision", bf16, bf16_why),
        # the reason maybe_compile logs: measured with bench/train_bench.py --compile
        ("torch_compile", on_cuda, f"compiled only on CUDA: {cpu}"
         + (" (compiling cost ~260 s for <=1.2x per step there)" if on_cuda is False else "")),
        ("gradient_checkpointing", big,
         f"{px}: the frame size was not recorded" if frame_shape is None else
         f"{px}: {frame_shape[0]}x{frame_shape[1]} frames hold a few MB of activations, "
         "recomputing them would only slow the step"),
    )  # fmt: skip
    out = []
    for key, applies, reason in rules:
        want = bool(config.get(key, False))
        if not want:
            out.append(SettingInEffect(key, False, False, ""))
        else:
            out.append(SettingInEffect(key, True, applies, "" if applies else reason))
    return out


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def feature_size(cfg: ModelConfig) -> int:
    return channel_widths(cfg)[2]


__all__ = ["CBHNet", "FastDropout", "N_SCALARS", "SettingInEffect", "encode_scalars",
           "configure_checkpointing", "maybe_compile", "compile_model",
           "cpu_bf16_native", "bf16_applies", "settings_in_effect"]  # fmt: skip
