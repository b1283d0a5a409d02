"""The shipped model: an ensemble of K members that differ only by training seed.

Each member is one finetuned checkpoint (cloudml.training.checkpoint); the ensemble's
prediction is the mean of the members' predictions in km. The model artifact is a
directory:

    ensemble.json      {"format_version", "members": [{"seed", "file", "sha256"}...],
                        "temporal_frames", "frame_shape"}
    member-0.pt ...    the members' model.pt, byte for byte

    ens = load_ensemble("model/")          # sha256 of every member checked first
    km = ens.predict_shard("12Feb25.h5")   # (n,) mean of the members, km
    per_member = ens.predict_pool(pool)    # (K, n) km
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloudml.errors import DataError
from cloudml.fileio import atomic_path, sha256_file, write_json

MANIFEST = "ensemble.json"
FORMAT_VERSION = 1


def write_ensemble(checkpoints: list[Path], dest: Path) -> dict[str, Any]:
    """Copy the members' checkpoints into `dest` with ensemble.json (written last, so a
    directory with a manifest is complete); returns the manifest."""
    from cloudml.training.checkpoint import load_checkpoint

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    members, shapes = [], set()
    for i, src in enumerate(checkpoints):
        ck = load_checkpoint(Path(src))
        shapes.add((int(ck["temporal_frames"]), tuple(ck.get("frame_shape", ()))))
        name = f"member-{i}.pt"
        with atomic_path(dest / name) as tmp:
            shutil.copyfile(src, tmp)
        members.append({"seed": int(ck["config"]["seed"]), "file": name,
                        "sha256": sha256_file(dest / name)})  # fmt: skip
    if len(shapes) != 1:
        raise DataError(f"{dest}: members disagree on frames per sample / frame shape: {shapes}")
    ((t, shape),) = shapes
    manifest = {"format_version": FORMAT_VERSION, "members": members,
                "temporal_frames": t, "frame_shape": list(shape)}  # fmt: skip
    write_json(dest / MANIFEST, manifest, indent=2)
    return manifest


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """ensemble.json of a model directory, every member's sha256 verified."""
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: no ensemble manifest (not a cloudml model directory)")
    try:
        manifest = json.loads(path.read_text())
        members = manifest["members"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a valid ensemble manifest ({e})") from None
    for m in members:
        got = (
            sha256_file(Path(model_dir) / m["file"])
            if (Path(model_dir) / m["file"]).is_file()
            else None
        )
        if got != m["sha256"]:
            raise DataError(
                f"{Path(model_dir) / m['file']}: sha256 {got} does not match the manifest's "
                f"{m['sha256']} (missing or changed since it was written)"
            )
    return manifest


@dataclass
class Ensemble:
    nets: list[Any]  # CBHNet per member, eval mode
    scalers: list[dict[str, float]]
    seeds: list[int]
    temporal_frames: int
    # per member: its config's (mixed_precision, mixed_precision_cpu), so that it predicts
    # in the precision it trained in
    precision: list[tuple[bool, bool]]

    def predict_pool(self, pool: Any, idx: np.ndarray | None = None) -> np.ndarray:
        """(K, n) predictions in km of every member for samples idx of `pool`."""
        from cloudml.training.loop import device_for, predict

        device = device_for()
        idx = np.arange(len(pool)) if idx is None else idx
        out = []
        for net, sc, (mp, mp_cpu) in zip(self.nets, self.scalers, self.precision, strict=True):
            z = predict(net.to(device), pool, idx, sc, device, mp, mp_cpu)
            out.append(z * sc["cbh_std"] + sc["cbh_mean"])
        return np.stack(out)

    def predict_shard(self, shard_path: str | Path) -> np.ndarray:
        """(n,) the ensemble's prediction (mean of the members, km) for every sample."""
        from cloudml.training.data import load_pool, shard_flight

        flight = shard_flight(Path(shard_path))
        pool = load_pool({flight: Path(shard_path)}, [flight], self.temporal_frames)
        return self.predict_pool(pool).mean(axis=0)


def from_checkpoints(checkpoints: list[Path]) -> Ensemble:
    """An Ensemble of finetuned checkpoints (weights_only loading, architecture checked)."""
    from cloudml.training.checkpoint import load_checkpoint, model_from_checkpoint

    if not checkpoints:
        raise DataError("ensemble: no member checkpoints given")
    cks = [load_checkpoint(Path(p)) for p in checkpoints]
    frames = {int(ck["temporal_frames"]) for ck in cks}
    if len(frames) != 1:
        raise DataError(f"ensemble members take different frames per sample: {sorted(frames)}")
    return Ensemble(
        nets=[model_from_checkpoint(ck, p) for ck, p in zip(cks, checkpoints, strict=True)],
        scalers=[ck["scalers"] for ck in cks],
        seeds=[int(ck["config"]["seed"]) for ck in cks],
        temporal_frames=frames.pop(),
        precision=[
            (
                bool(ck["config"].get("mixed_precision", True)),
                bool(ck["config"].get("mixed_precision_cpu", False)),
            )
            for ck in cks
        ],  # fmt: skip
    )


def load_ensemble(model_dir: str | Path) -> Ensemble:
    """The ensemble stored in a model directory (write_ensemble's layout)."""
    manifest = read_manifest(Path(model_dir))
    return from_checkpoints([Path(model_dir) / m["file"] for m in manifest["members"]])
