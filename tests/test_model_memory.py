"""Gradient checkpointing at full size (model.encode_per_frame_index): one checkpointed chunk
of B frames per frame index t. The math must equal running the same chunks without
checkpointing, BatchNorm running statistics must be updated once per chunk (not again by the
backward's recompute), and only small per-chunk features may stay alive between chunks."""

import copy

import pytest
import torch

from cloudml.config import load_config
from cloudml.model import CBHNet

B, T, H, W = 4, 3, 16, 16


def _net(**kw) -> CBHNet:
    torch.manual_seed(0)
    net = CBHNet(load_config("tuned", {"torch_compile": False, **kw}).model, T).train()
    torch.nn.init.normal_(net.encoder.film[2].weight, std=0.3)  # FiLM starts as identity
    return net


def _per_chunk_reference(net: CBHNet, frames: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The chunked math without checkpointing: the encoder on frames[:, t] for each t
    (channels_last like the model's input: dropout masks follow the memory layout)."""
    cl = torch.channels_last
    feats = torch.stack(
        [net.encoder(frames[:, t : t + 1].contiguous(memory_format=cl), s) for t in range(T)], 1
    )  # (B, T, C3)
    z = feats.mean(dim=1) if net.temporal is None else net.temporal(feats)
    return net.head(z).squeeze(1)


def _bn_buffers(net: CBHNet) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.named_buffers()}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(B, T, H, W, generator=g), torch.randn(B, 3, generator=g)


@pytest.mark.parametrize(
    "kw",
    [{}, {"memory_optimized": True, "use_multiscale_temporal": True},
     {"use_temporal_attention": False, "use_spatial_attention": False}],
)  # fmt: skip
def test_checkpointed_chunks_equal_per_chunk_reference(kw):
    """Outputs, gradients, running stats and the RNG stream after the step all match."""
    ckpt = _net(**kw)
    ckpt.use_checkpoint = True
    ref = copy.deepcopy(ckpt)
    ref.use_checkpoint = False
    x, s = _data()
    results = []
    for net, run in ((ckpt, lambda: ckpt(x, s)), (ref, lambda: _per_chunk_reference(ref, x, s))):
        torch.manual_seed(1)  # same dropout masks in both
        y = run()
        (y * torch.arange(1.0, B + 1)).sum().backward()  # unequal weights per sample
        results.append((y.detach(), {n: p.grad for n, p in net.named_parameters()},
                        _bn_buffers(net), torch.random.get_rng_state()))  # fmt: skip
    (y_c, g_c, b_c, rng_c), (y_r, g_r, b_r, rng_r) = results
    torch.testing.assert_close(y_c, y_r, rtol=1e-5, atol=1e-5)
    assert g_c.keys() == g_r.keys()
    for name in g_c:
        assert g_c[name] is not None, name
        torch.testing.assert_close(g_c[name], g_r[name], rtol=1e-5, atol=1e-5, msg=name)
    for name in b_c:
        torch.testing.assert_close(b_c[name], b_r[name], rtol=1e-5, atol=1e-6, msg=name)
    assert torch.equal(rng_c, rng_r)  # the recompute replays RNG without consuming it


def test_recompute_does_not_update_running_stats_again():
    """Each chunk's forward updates the encoder's BatchNorm once (T per step); the backward's
    recompute of every chunk leaves running_mean/var and num_batches_tracked as they were."""
    net = _net()
    net.use_checkpoint = True
    x, s = _data()
    before = _bn_buffers(net)
    objects = {k: id(v) for k, v in net.named_buffers()}
    y = net(x, s)
    after_forward = _bn_buffers(net)
    y.sum().backward()
    after_backward = _bn_buffers(net)
    for name, buf in after_forward.items():
        assert torch.equal(after_backward[name], buf), name
    for i in range(3):
        key = f"encoder.blocks.{i}.bn.num_batches_tracked"
        assert after_backward[key].item() == before[key].item() + T
        assert not torch.equal(after_backward[f"encoder.blocks.{i}.bn.running_mean"],
                               before[f"encoder.blocks.{i}.bn.running_mean"])  # fmt: skip
    assert after_backward["head.1.num_batches_tracked"].item() == 1
    assert {k: id(v) for k, v in net.named_buffers()} == objects  # real buffers back in place


def test_eval_and_no_grad_take_the_unchunked_path():
    """Checkpointing changes nothing where no backward follows: eval mode, or no_grad."""
    net = _net()
    x, s = _data()
    outs = {}
    for use in (False, True):
        net.use_checkpoint = use
        net.eval()
        outs[("eval", use)] = net(x, s)
        net.train()
        state = copy.deepcopy(net.state_dict())
        torch.manual_seed(2)
        with torch.no_grad():
            outs[("no_grad", use)] = net(x, s)
        net.load_state_dict(state)
    assert torch.equal(outs[("eval", False)], outs[("eval", True)])
    assert torch.equal(outs[("no_grad", False)], outs[("no_grad", True)])


def test_only_per_chunk_features_stay_alive_between_chunks():
    """With checkpointing, the tensors autograd keeps for backward outside the checkpoints
    are the inputs and the (B, C3) features: together smaller than one chunk's first
    conv activation (B, C1, H, W), which the unchunked path keeps B*T of."""
    net = _net()
    x, s = _data()
    c1 = net.encoder.blocks[0].conv.out_channels
    one_chunk_act = B * c1 * H * W * 4  # bytes, float32
    saved = {}
    for use in (False, True):
        net.use_checkpoint = use
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net(x, s)
        saved[use] = total
    assert saved[False] > T * one_chunk_act  # the hook sees what the unchunked path keeps
    params = sum(p.numel() * 4 for p in net.parameters())
    assert saved[True] - params < one_chunk_act
