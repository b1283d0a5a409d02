"""Self-describing checkpoints (nanoGPT style): weights plus the model config, training
config, stage, step and scalers, so a checkpoint alone rebuilds its network.

Only tensors, dicts, lists, numbers and strings are stored, and every load uses
torch.load(weights_only=True): a checkpoint cannot execute code.

A checkpoint handed from one stage to the next is checked against the sha256 its stage
recorded in summary.json (`checkpoint_sha256`, `verify_stage_checkpoint`).
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cloudml.config import Config, ModelConfig
from cloudml.errors import ConfigError, DataError
from cloudml.fileio import atomic_path, check_input_file, sha256_file
from cloudml.model import CBHNet

log = logging.getLogger(__name__)


def save_checkpoint(path: Path, obj: dict[str, Any]) -> None:
    """Write atomically: a kill mid-save leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at `path`, loaded on the CPU; DataError (naming the file) when it is
    missing, unreadable or lacks an entry every checkpoint has."""
    path = check_input_file(path, "checkpoint")  # missing, a directory, a loop, unreadable
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors have many types
        raise DataError(f"{path}: not a readable checkpoint ({load_error_reason(e)})") from None
    if not isinstance(ck, dict):
        raise DataError(f"{path}: not a readable checkpoint (holds a {type(ck).__name__})")
    for key in ("model", "model_config", "temporal_frames", "scalers", "stage"):
        if key not in ck:
            raise DataError(f"{path}: checkpoint has no {key!r} entry")
    return ck


def load_error_reason(e: Exception) -> str:
    """Why torch.load(weights_only=True) failed, in our words. torch's own text advises
    re-running with the weights-only check switched off, which would let the file run code:
    never shown."""
    text = str(e)
    if isinstance(e, pickle.UnpicklingError):
        detail = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln), "")
        return (
            "it holds pickled objects beyond tensors and plain data, refused without "
            f"running them{': ' + detail if detail else ''}"
        )
    first = text.splitlines()[0] if text else ""
    if "PytorchStreamReader" in first:  # the zip container is cut short or not a zip
        return f"truncated or corrupt: {first.split('. This is an internal', 1)[0]}"
    sentences = [x for x in first.split(". ") if "weights_only" not in x]
    return f"{type(e).__name__}: {'. '.join(sentences)}".rstrip(": ")


def load_weights(net: nn.Module, state: dict[str, torch.Tensor], where: str | Path) -> None:
    """Strict load; a different architecture raises ConfigError naming the mismatched keys."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or shape:
        parts = [
            f"{label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shape))
            if keys
        ]
        raise ConfigError(f"{where}: weights do not fit this architecture ({'; '.join(parts)})")
    net.load_state_dict(state)


def check_resumable(ck: dict[str, Any], base: dict[str, Any], path: Path) -> None:
    """A last.pt from another stage or configuration must not be silently continued: raise
    ConfigError unless `ck` has base's stage and the same value for every key of base's config."""
    if ck.get("stage") != base["stage"]:
        raise ConfigError(
            f"{path}: holds stage {ck.get('stage')!r}, not {base['stage']!r}; use another --out"
        )
    diff = sorted(k for k in base["config"] if ck["config"].get(k) != base["config"][k])
    if diff:
        raise ConfigError(
            f"{path}: was written with different settings for {diff}; use another --out"
        )


def model_from_checkpoint(ck: dict[str, Any], where: str | Path) -> CBHNet:
    """The network described by a checkpoint, with its weights, in eval mode."""
    try:
        mcfg = ModelConfig(**ck["model_config"])
    except TypeError as e:
        raise ConfigError(f"{where}: model_config does not match ModelConfig ({e})") from None
    net = CBHNet(mcfg, int(ck["temporal_frames"]))
    load_weights(net, ck["model"], where)
    return net.eval()


# keys that decide the network's layers: the architecture always comes from the checkpoint
ARCHITECTURE_KEYS = ("memory_optimized", "use_spatial_attention", "use_temporal_attention",
                     "use_multiscale_temporal", "attention_heads", "temporal_frames")  # fmt: skip


def architecture_conflicts(cfg: Config, overridden: Iterable[str], ck: dict[str, Any]) -> list[str]:
    """The `overridden` architecture keys whose value in `cfg` differs from the checkpoint's,
    as "key=<cfg value> (checkpoint: <its value>)"."""
    flat = cfg.flat()
    own = {**ck["model_config"], "temporal_frames": int(ck["temporal_frames"])}
    return [
        f"{k}={flat[k]} (checkpoint: {own[k]})"
        for k in ARCHITECTURE_KEYS
        if k in overridden and k in own and own[k] != flat[k]
    ]


def check_architecture_overrides(
    cfg: Config, overridden: Iterable[str], checkpoints: Iterable[str | Path]
) -> None:
    """ConfigError when an explicit override (--set) of an architecture key disagrees with a
    checkpoint. The network is rebuilt from the checkpoint's own config (its weights fit no
    other), so such an override cannot be honoured; ignoring it silently would report
    metrics of a model the user did not ask for."""
    overridden = set(overridden)
    for path in checkpoints:
        conflicts = architecture_conflicts(cfg, overridden, load_checkpoint(Path(path)))
        if conflicts:
            raise ConfigError(
                f"{path}: --set {', '.join(conflicts)}: the architecture comes from the "
                "checkpoint and cannot be overridden; drop the override or give a checkpoint "
                "trained with it"
            )


# --- checkpoints between stages ----------------------------------------------------------------
def checkpoint_sha256(stage_dir: str | Path, name: str = "model.pt") -> str:
    """sha256 of a stage's checkpoint, for its summary.json (`model_sha256`)."""
    return sha256_file(Path(stage_dir) / name)


def verify_stage_checkpoint(stage_dir: str | Path, name: str = "model.pt") -> Path:
    """The stage's checkpoint path, after checking it against summary.json's `model_sha256`.

    A checkpoint handed from one stage to the next (local artifact dirs carry no manifest)
    is refused when it changed after its stage finished. Summaries written before the hash
    existed are accepted with a warning.
    """
    stage_dir = Path(stage_dir)
    ckpt, summary_path = stage_dir / name, stage_dir / "summary.json"
    if not ckpt.is_file():
        raise DataError(f"{ckpt}: checkpoint missing (expected the stage's {name})")
    want = None
    if summary_path.is_file():
        try:
            want = json.loads(summary_path.read_text()).get("model_sha256")
        except ValueError as e:
            raise DataError(f"{summary_path}: not valid JSON ({e})") from None
    if want is None:
        log.warning("%s: no model_sha256 in %s; checkpoint not verified", ckpt, summary_path)
        return ckpt
    got = sha256_file(ckpt)
    if got != want:
        raise DataError(
            f"{ckpt}: sha256 {got} does not match model_sha256 {want} in {summary_path}; "
            "refusing a checkpoint changed after its stage finished"
        )
    return ckpt
