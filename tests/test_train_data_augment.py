"""cloudml.training.data.augment gives the same bits as the whole-batch implementation it replaced
(same draws, same order), and leaves the caller's tensor alone."""

from __future__ import annotations

import pytest
import torch

from cloudml.training.data import augment


def _reference_augment(
    frames: torch.Tensor,
    saa_deg: torch.Tensor,
    gen: torch.Generator,
    jitter: float = 0.2,
    p_erase: float = 0.5,
    p_flip: float = 0.5,
    p_vflip: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous augment body, verbatim: whole-batch masks and torch.where mirrors."""
    b, t, h, w = frames.shape
    dev = frames.device

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(dev)

    contrast = 1.0 + jitter * (2 * u(b, 1, 1, 1) - 1)
    bright = jitter * (2 * u(b, 1, 1, 1) - 1)
    x = frames * contrast + bright  # (B, T, H, W)

    # random erasing: one rectangle per sample, broadcast over T
    area = (0.02 + 0.13 * u(b)) * h * w
    aspect = torch.exp((u(b) - 0.5) * 1.2)  # ~0.55..1.8
    eh = (area * aspect).sqrt().clamp(1, h)
    ew = (area / aspect).sqrt().clamp(1, w)
    y0 = (u(b) * (h - eh + 1)).floor()
    x0 = (u(b) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    in_r = (rows >= y0[:, None]) & (rows < (y0 + eh.floor())[:, None])  # (B, H)
    in_c = (cols >= x0[:, None]) & (cols < (x0 + ew.floor())[:, None])  # (B, W)
    erase = (u(b) < p_erase)[:, None, None] & in_r[:, :, None] & in_c[:, None, :]  # (B, H, W)
    x = x.masked_fill(erase[:, None], 0.0)

    flip = u(b) < p_flip  # (B,)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    saa = torch.where(flip.to(saa_deg.device), torch.remainder(360.0 - saa_deg, 360.0), saa_deg)
    vflip = u(b) < p_vflip  # (B,)
    x = torch.where(vflip[:, None, None, None], x.flip(-2).flip(1), x)  # rows and frame order
    saa = torch.where(vflip.to(saa.device), torch.remainder(180.0 - saa, 360.0), saa)
    return x, saa


def _inputs(seed: int, shape: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    frames = torch.randn(*shape, generator=g) * 2.5  # (B, T, H, W) z-scored scale
    saa = torch.rand(shape[0], generator=g, dtype=torch.float64) * 360  # (B,)
    return frames, saa


def _both(frames, saa, seed, **kw):
    """(new, reference) outputs from identically seeded generators; checks the draws match."""
    g_new, g_ref = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    new = augment(frames, saa, g_new, **kw)
    ref = _reference_augment(frames, saa, g_ref, **kw)
    # both consumed the same random numbers: the next draw agrees
    assert torch.equal(torch.rand(3, generator=g_new), torch.rand(3, generator=g_ref))
    return new, ref


def _assert_same(new, ref):
    for a, b in zip(new, ref, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "shape",
    [(16, 5, 44, 64), (9, 1, 13, 17), (7, 3, 31, 8), (2, 4, 1, 5), (3, 2, 5, 1)],
)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_augment_is_bit_identical_to_the_whole_batch_version(shape, seed):
    frames, saa = _inputs(seed, shape)
    before = frames.clone()
    new, ref = _both(frames, saa, seed)
    _assert_same(new, ref)
    assert torch.equal(frames, before)  # the caller's tensor is not written
    assert new[0].data_ptr() != frames.data_ptr()


@pytest.mark.parametrize("p_erase", [0.0, 1.0])
@pytest.mark.parametrize(("p_flip", "p_vflip"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_every_mirror_and_erase_combination_matches(p_erase, p_flip, p_vflip):
    """Each branch forced on/off in turn: the erased rectangle lands where the mirrors put it."""
    frames, saa = _inputs(7, (6, 3, 23, 29))
    kw = dict(jitter=0.3, p_erase=p_erase, p_flip=p_flip, p_vflip=p_vflip)
    new, ref = _both(frames, saa, 5, **kw)
    _assert_same(new, ref)
    assert bool((new[0] == 0).any()) == (p_erase == 1.0)  # erasing did (not) happen


def test_large_rectangles_clamped_to_tiny_frames_match():
    """Frames of 2x3: the rectangle is clamped to the frame and may cover all of it."""
    frames, saa = _inputs(3, (32, 2, 2, 3))
    new, ref = _both(frames, saa, 11, p_erase=1.0)
    _assert_same(new, ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_other_input_dtypes_promote_as_before(dtype):
    frames, saa = _inputs(4, (5, 3, 12, 10))
    new, ref = _both(frames.to(dtype), saa, 4)
    _assert_same(new, ref)
    assert new[0].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


def test_non_contiguous_input_matches_and_stays_unchanged():
    frames, saa = _inputs(6, (4, 3, 15, 11))
    view = frames.transpose(-1, -2)  # (B, T, 11, 15), strided
    before = view.clone()
    new, ref = _both(view, saa, 6)
    _assert_same(new, ref)
    assert torch.equal(view, before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="NOT EXERCISED: no CUDA device")
def test_device_tensors_are_augmented_on_the_host_and_returned_on_the_device():
    frames, saa = _inputs(8, (4, 3, 9, 12))
    cpu = augment(frames, saa, torch.Generator().manual_seed(8))
    gpu = augment(frames.cuda(), saa.cuda(), torch.Generator().manual_seed(8))
    assert gpu[0].device.type == gpu[1].device.type == "cuda"
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])
