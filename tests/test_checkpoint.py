"""Checkpoint loading in our words (never torch's advice to switch the weights-only check off),
the input-path check on checkpoints, and architecture overrides that disagree with a
checkpoint refused (cloudml/training/checkpoint.py)."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from cloudml.config import load_config
from cloudml.errors import ConfigError, DataError
from cloudml.training.checkpoint import (
    architecture_conflicts,
    check_architecture_overrides,
    load_checkpoint,
    load_error_reason,
    save_checkpoint,
)


def _write_checkpoint(path: Path, **changes) -> Path:
    """A checkpoint with every entry load_checkpoint requires (no weights: none are read)."""
    cfg = load_config("tuned", {"memory_optimized": True, "temporal_frames": 3, **changes})
    save_checkpoint(path, {
        "model": {}, "model_config": asdict(cfg.model), "temporal_frames": 3,
        "scalers": {}, "stage": "finetune", "config": cfg.flat(),
    })  # fmt: skip
    return path


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused_in_our_words(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"model": _Evil()}, p)
    with pytest.raises(DataError) as e:
        load_checkpoint(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: not a readable checkpoint (it holds pickled objects")
    assert "system" in msg and "weights_only" not in msg and "\n" not in msg


@pytest.mark.parametrize("data", [b"PK\x03\x04 not really a zip", None])
def test_truncated_checkpoint_is_named_truncated(tmp_path, data):
    p = tmp_path / "cut.pt"
    if data is None:  # a real checkpoint cut in half, as an interrupted copy leaves it
        _write_checkpoint(p)
        data = p.read_bytes()[: p.stat().st_size // 2]
    p.write_bytes(data)
    with pytest.raises(DataError, match=r"not a readable checkpoint \(truncated or corrupt: ") as e:
        load_checkpoint(p)
    assert "weights_only" not in str(e.value) and "internal miniz" not in str(e.value)


def test_reason_drops_any_sentence_advising_weights_only_false():
    # torch's own wording of the advice (torch.serialization, 2.6+)
    e = RuntimeError(
        "Bad thing. Re-running `torch.load` with `weights_only` set to `False` will likely "
        "succeed. More"
    )
    assert load_error_reason(e) == "RuntimeError: Bad thing. More"


@pytest.mark.parametrize(
    "make, what",
    [
        (lambda p: p.mkdir(), "checkpoint is a directory, expected a file"),
        (lambda p: os.symlink(p.name, p), "checkpoint is a symlink loop"),
        (lambda p: os.symlink("gone.pt", p), "checkpoint is a dangling symlink"),
        (lambda p: None, "checkpoint does not exist"),
    ],
)
def test_checkpoint_path_problems_are_told_apart(tmp_path, make, what):
    p = tmp_path / "model.pt"
    make(p)
    with pytest.raises(DataError, match=f"^{p}: {what}"):
        load_checkpoint(p)


def test_architecture_conflicts_only_for_overridden_keys_that_differ(tmp_path):
    ck = load_checkpoint(_write_checkpoint(tmp_path / "m.pt"))
    cfg = load_config("tuned", {"memory_optimized": False, "temporal_frames": 3})
    # memory_optimized differs, but only an explicit override of it is a conflict
    assert architecture_conflicts(cfg, set(), ck) == []
    assert architecture_conflicts(cfg, {"memory_optimized", "temporal_frames", "epochs"}, ck) == [
        "memory_optimized=False (checkpoint: True)"
    ]
    five = load_config("tuned", {"memory_optimized": True, "temporal_frames": 5})
    assert architecture_conflicts(five, {"temporal_frames"}, ck) == [
        "temporal_frames=5 (checkpoint: 3)"
    ]


def test_check_architecture_overrides_names_checkpoint_key_and_both_values(tmp_path):
    good = _write_checkpoint(tmp_path / "a.pt")
    other = _write_checkpoint(tmp_path / "b.pt", use_temporal_attention=False)
    cfg = load_config("tuned", {"memory_optimized": True, "temporal_frames": 3})
    check_architecture_overrides(cfg, {"memory_optimized", "use_temporal_attention"}, [good])
    with pytest.raises(ConfigError) as e:
        check_architecture_overrides(cfg, {"use_temporal_attention"}, [good, other])
    assert str(e.value).startswith(
        f"{other}: --set use_temporal_attention=True (checkpoint: False): the architecture "
        "comes from the checkpoint"
    )
