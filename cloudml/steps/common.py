"""What every step shares: the config as JSON, shard and summary collection from artifact
directories, the pipeline's JSON format, atomic copies, the stage's Pushgateway client."""

from __future__ import annotations

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
