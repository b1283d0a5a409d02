"""What every step shares: the config as JSON, shard and summary collection from artifact
directories, the pipeline's JSON format, atomic copies, the stage's Pushgateway client, and
the training tasks' state key and UI outputs (Metrics scalars, TensorBoard curves)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cloudml.config import Config, build_config, config_from_dict
from cloudml.errors import DataError
from cloudml.fileio import atomic_path


def resolve_config_json(preset: str, values: dict[str, Any]) -> str:
    """Validate the pipeline's parameter values as one Config (every problem listed) -> JSON."""
    return build_config(dict(values), preset=preset).to_json()


def config_from_json(text: str) -> Config:
    return config_from_dict(json.loads(text))


# the pipeline's JSON files (summaries, stages.json, gate.json): sorted keys, no trailing newline
JSON_OPTIONS: dict[str, Any] = {"end": "", "indent": 2, "sort_keys": True, "default": str}


def collect_shards(dirs: Iterable[str | Path]) -> dict[str, Path]:
    """{flight: shard path} from the ingest artifact directories (ParallelFor's Collected)."""
    shards: dict[str, Path] = {}
    for d in dirs:
        found = sorted(Path(d).glob("*.h5"))
        if not found:
            raise DataError(f"{d}: ingest artifact holds no <flight>.h5 shard")
        for path in found:
            if path.stem in shards:
                raise DataError(
                    f"flight {path.stem} ingested twice: {shards[path.stem]} and {path}"
                )
            shards[path.stem] = path
    return shards


def ingest_summaries(dirs: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """{flight: ingest summary} from the ingest artifact directories."""
    out = {}
    for d in dirs:
        for path in sorted(Path(d).glob("*.summary.json")):
            out[path.name.removesuffix(".summary.json")] = json.loads(path.read_text())
    return out


def _telemetry(pipeline: str, stage: str):
    """The stage's Pushgateway client (a no-op with one info line when PUSHGATEWAY_URL is unset)."""
    from cloudml.cluster.telemetry import Telemetry

    return Telemetry(pipeline, stage)


def copy_file(src: Path, dest: Path) -> None:
    """Copy src onto dest atomically (artifact outputs that mirror a file of a directory)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


# --- training tasks: state key (caching + resume) and what the Kubeflow UI shows -----------
def code_fingerprint() -> str:
    """sha256 of the installed cloudml package's sources and presets plus the torch and numpy
    versions: a code change moves a training stage's state to a new key, so new code never
    resumes from old code's epochs."""
    import numpy
    import torch

    import cloudml

    root = Path(cloudml.__file__).parent
    h = hashlib.sha256(f"torch {torch.__version__} numpy {numpy.__version__}".encode())
    for path in sorted([*root.rglob("*.py"), *root.rglob("*.yaml")]):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def data_fingerprints(shard_dirs: Iterable[str | Path]) -> dict[str, str]:
    """{flight: fingerprint} of the ingest artifacts: the raw files' sha256s their summary
    records (with the code and config, these determine the shard), else the shard's own."""
    from cloudml.fileio import sha256_file

    out: dict[str, str] = {}
    summaries = ingest_summaries(shard_dirs)
    for flight, path in collect_shards(shard_dirs).items():
        raw = summaries.get(flight, {}).get("raw_sha256")
        out[flight] = json.dumps(raw, sort_keys=True) if raw else sha256_file(path)
    return out


def training_state_key(
    config_json: str, shard_dirs: list[str], pretrained_dir: str | Path | None = None
) -> str:
    """The key a training task's stage state lives under (store.resume.result_key): code,
    config (which holds the member's seed), the data fingerprints and, for finetune, the
    pretrained checkpoint's sha256. No run id: an unchanged re-run gets the same key (and
    KFP's cache can hit, as no input differs per run); a retry on a new pod resumes."""
    from cloudml.store.resume import result_key

    parts: dict[str, Any] = {
        "code": code_fingerprint(),
        "config": json.loads(config_json),
        "data": data_fingerprints(shard_dirs),
    }
    if pretrained_dir is not None:
        summary = Path(pretrained_dir) / "summary.json"
        parts["pretrained"] = json.loads(summary.read_text()).get("model_sha256", "")
    return result_key(parts)


def training_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """A training stage's summary -> the scalars of its KFP Metrics artifact (pure):
    epochs_run, best_epoch, best_selection_loss (on the held-out tails of the training
    flights), stopped_early (1 = early stopping ended it before `epochs`)."""
    return {
        "epochs_run": float(summary["epochs_run"]),
        "best_epoch": float(summary["best_epoch"]),
        "best_selection_loss": float(summary["best_selection_loss"]),
        "stopped_early": 1.0 if summary.get("stopped_early") else 0.0,
    }


def training_outputs(
    summary: dict[str, Any],
    model_dir: str | Path,
    curves_dir: str | Path,
    curves_uri: str,
    ui_metadata_path: str | Path,
    metrics_path: str | Path | None = None,
) -> dict[str, float]:
    """What a training task shows in the Kubeflow UI: TensorBoard event files of every
    history in model_dir (pretrain_history.json, history.json) under curves_dir, the
    mlpipeline-ui-metadata document pointing the UI's TensorBoard viewer at curves_uri;
    returns the Metrics scalars (training_metrics)."""  # fmt: skip
    from cloudml.curves import tensorboard_ui_metadata, write_curves
    from cloudml.fileio import write_json

    model_dir = Path(model_dir)
    for name, stage in (("pretrain_history.json", "pretrain"), ("history.json", summary["stage"])):
        if (model_dir / name).is_file():
            write_curves(json.loads((model_dir / name).read_text()), Path(curves_dir), stage)
    write_json(Path(ui_metadata_path), tensorboard_ui_metadata(curves_uri), **JSON_OPTIONS)
    scalars = training_metrics(summary)
    if metrics_path is not None:
        # the Metrics artifact as a file too: kfp.local's cache treats an output artifact
        # without a file as missing, so a task with a Metrics output never hit its cache
        write_json(Path(metrics_path), scalars, **JSON_OPTIONS)
    return scalars
