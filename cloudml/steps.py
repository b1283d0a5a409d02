"""Glue between KFP component bodies and the stage functions.

Each KFP component (components/*.py) calls exactly one function here with its parameters
and artifact paths; this module turns those into the stage API's types (Config, shard dict,
checkpoint paths) and writes the extra files the pipeline needs (ingest summary JSON,
report, stage timings). Nothing here knows about KFP, so every function also runs from a
plain Python shell or a test.

Artifact layouts (each artifact is a directory):
    shard (Dataset):      <flight>.h5, <flight>.summary.json
    pretrained/finetuned (Model): model.pt, last.pt, history.json, summary.json
    evaluation (Dataset): metrics.json, predictions.csv, *.png, report.html, model_card.md,
                          stages.json, gate.json
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cloudml.config import Config, build_config, config_from_dict
from cloudml.errors import DataError, StorageError
from cloudml.fileio import atomic_path, write_json
from cloudml.gate import gate_verdict
from cloudml.store.layout import is_remote

log = logging.getLogger(__name__)


# --- config ----------------------------------------------------------------------------
def resolve_config_json(preset: str, values: dict[str, Any]) -> str:
    """Validate the pipeline's parameter values as one Config (every problem listed) -> JSON."""
    return build_config(dict(values), preset=preset).to_json()


def config_from_json(text: str) -> Config:
    return config_from_dict(json.loads(text))


# the pipeline's JSON files (summaries, stages.json, gate.json): sorted keys, no trailing newline
JSON_OPTIONS: dict[str, Any] = {"end": "", "indent": 2, "sort_keys": True, "default": str}


# --- ingest ----------------------------------------------------------------------------
def _local_raw_dir(raw_uri: str, flight: str, scratch: Path) -> Path:
    """A local directory holding raw/<flight>/ (downloaded from the store when remote)."""
    if is_remote(raw_uri):
        from cloudml.store.backends import open_store  # only remote runs need the S3 client
        from cloudml.store.manifest import fetch_raw_flight

        fetch_raw_flight(open_store(raw_uri), flight, scratch / flight)
        return scratch
    raw_dir = Path(raw_uri.removeprefix("file://"))
    if not (raw_dir / flight).is_dir():
        raise DataError(
            f"{raw_dir / flight}: raw flight directory does not exist (raw_uri={raw_uri})"
        )
    return raw_dir


def raw_data_source(raw_dir: Path, flight: str) -> str:
    """'synthetic campaign' when the generator's campaign.json beside the flights lists it."""
    marker = Path(raw_dir) / "campaign.json"
    if marker.is_file():
        meta = json.loads(marker.read_text())
        if flight in meta.get("flights", []):
            return f"synthetic campaign ({meta.get('generator', 'cloudml.data.synth')})"
    return "raw flight files (no synthetic-campaign marker)"


def raw_fingerprint(raw_uri: str, flight: str) -> str:
    """sha256 identifying the raw files of `flight` under raw_uri, cheap to compute.

    Remote: the sha256 of the flight's stored manifest (it lists every object's sha256), so
    nothing is downloaded. Local: sha256 over (file name, file sha256) of raw_uri/<flight>/.
    Feeding it to ingest makes KFP's cache key change exactly when the raw data changes.
    """
    import hashlib

    from cloudml.fileio import sha256_file

    if is_remote(raw_uri):
        from cloudml.store.backends import open_store
        from cloudml.store.manifest import find_raw_flight, manifest_sha256

        store = open_store(raw_uri)
        prefix = find_raw_flight(store, flight)  # where fetch_raw_flight looks
        if prefix is None:
            raise StorageError(
                f"raw flight {flight!r}: no manifest under {raw_uri} (raw/{flight}/ or {flight}/)"
            )
        return manifest_sha256(store, prefix)
    flight_dir = Path(raw_uri.removeprefix("file://")) / flight
    files = sorted(p for p in flight_dir.iterdir() if p.is_file()) if flight_dir.is_dir() else []
    if not files:
        raise DataError(
            f"{flight_dir}: raw flight directory is missing or empty (raw_uri={raw_uri})"
        )
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()


def run_ingest(
    raw_uri: str, flight: str, config_json: str, out_dir: Path, fingerprint: str = ""
) -> dict[str, Any]:
    """Ingest one flight into out_dir/<flight>.h5 plus its summary JSON; returns the summary.
    `fingerprint` (raw_fingerprint) is recorded in the summary; it is there for the cache key."""
    from cloudml.data.ingest import ingest_flight

    cfg = config_from_json(config_json)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"raw-{flight}-") as scratch:
        raw_dir = _local_raw_dir(raw_uri, flight, Path(scratch))
        summary = ingest_flight(raw_dir, flight, out_dir / f"{flight}.h5", cfg)
        summary["data_source"] = raw_data_source(raw_dir, flight)
        summary["raw_fingerprint"] = fingerprint
    write_json(out_dir / f"{flight}.summary.json", summary, **JSON_OPTIONS)
    return summary


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


# --- training --------------------------------------------------------------------------
def _telemetry(pipeline: str, stage: str):
    """The stage's Pushgateway client (a no-op with one info line when PUSHGATEWAY_URL is unset)."""
    from cloudml.cluster.telemetry import Telemetry

    return Telemetry(pipeline, stage)


def _epoch_logger(stage: str, pipeline: str):
    """on_epoch callback: a log line per epoch, and the epoch's metrics to the Pushgateway."""
    telemetry = _telemetry(pipeline, stage)

    def on_epoch(rec: dict[str, Any]) -> None:
        log.info(
            "%s epoch %s: train_loss %.4f val_loss %.4f val_r2 %.4f lr %.2e",
            stage,
            rec.get("epoch"),
            rec.get("train_loss", float("nan")),
            rec.get("val_loss", float("nan")),
            rec.get("val_r2", float("nan")),
            rec.get("lr", float("nan")),
        )
        telemetry.epoch(rec)

    return on_epoch


def _resumable(stage: str, pipeline: str, run_id: str, out_dir: Path):
    """on_epoch for a training stage; with a run id and CLOUDML_STORE set, the stage state is
    first restored from the store (a retry on a new pod resumes) and then synced every epoch."""
    inner = _epoch_logger(stage, pipeline)
    if not run_id or not os.environ.get("CLOUDML_STORE"):
        return inner
    from cloudml.store.backends import open_store
    from cloudml.store.resume import restore_stage_state, state_prefix, sync_on_epoch

    store = open_store()
    prefix = state_prefix(pipeline, run_id, stage)
    epoch = restore_stage_state(store, prefix, out_dir)
    if epoch:
        log.info("%s: resuming after epoch %d from %s", stage, epoch, store.describe(prefix))
    return sync_on_epoch(store, prefix, out_dir, inner)


def run_pretrain(
    shard_dirs: list[str], config_json: str, out_dir: Path, run_id: str = ""
) -> dict[str, Any]:
    """Pretrain on cfg.data.pretrain_flight's shard; checkpoints into out_dir."""
    from cloudml.training.stages import pretrain

    cfg = config_from_json(config_json)
    on_epoch = _resumable("pretrain", cfg.preset, run_id, Path(out_dir))
    with _telemetry(cfg.preset, "pretrain").timed():
        summary = pretrain(collect_shards(shard_dirs), cfg, Path(out_dir), on_epoch=on_epoch)
    return _seal(Path(out_dir), summary)


def run_finetune(
    shard_dirs: list[str], config_json: str, pretrained_dir: Path, out_dir: Path, run_id: str = ""
) -> dict[str, Any]:
    """Fine-tune from pretrained_dir/model.pt on every flight but the validation flight."""
    from cloudml.training.checkpoint import verify_stage_checkpoint
    from cloudml.training.stages import finetune

    cfg = config_from_json(config_json)
    ckpt = verify_stage_checkpoint(pretrained_dir)  # missing, or changed since pretrain: refused
    on_epoch = _resumable("finetune", cfg.preset, run_id, Path(out_dir))
    with _telemetry(cfg.preset, "finetune").timed():
        summary = finetune(collect_shards(shard_dirs), cfg, ckpt, Path(out_dir), on_epoch=on_epoch)
    return _seal(Path(out_dir), summary)


def _seal(out_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Record model.pt's sha256 in summary.json; the next stage checks it before loading."""
    from cloudml.training.checkpoint import checkpoint_sha256

    summary = {**summary, "model_sha256": checkpoint_sha256(out_dir)}
    write_json(out_dir / "summary.json", summary, **JSON_OPTIONS)
    return summary


# --- evaluation + report ---------------------------------------------------------------
def data_source(summaries: dict[str, dict[str, Any]]) -> str:
    """'synthetic campaign' or 'real flights' as the ingest summaries record it."""
    flags = set()
    for s in summaries.values():
        src = s.get("data_source") or s.get("source")
        if src is None and "synthetic" in s:
            src = "synthetic campaign" if s["synthetic"] else "real flights"
        if src is not None:
            flags.add(str(src))
    if not flags:
        return "not recorded in the shards"
    return " + ".join(sorted(flags))


def stage_seconds(
    summaries: dict[str, dict[str, Any]], pretrain_dir: Path, finetune_dir: Path
) -> dict[str, float]:
    """Seconds per stage from the ingest summaries and the training summaries."""
    out: dict[str, float] = {}
    if summaries:
        out["ingest"] = float(sum(float(s.get("seconds", 0.0)) for s in summaries.values()))
    for stage, d in (("pretrain", pretrain_dir), ("finetune", finetune_dir)):
        p = Path(d) / "summary.json"
        if p.is_file():
            out[stage] = float(json.loads(p.read_text()).get("seconds", 0.0))
    return out


def run_evaluate(
    shard_dirs: list[str],
    config_json: str,
    pretrained_dir: Path,
    finetuned_dir: Path,
    out_dir: Path,
    threshold: float,
    min_std_ratio: float,
    report_path: Path | None = None,
    card_path: Path | None = None,
) -> dict[str, Any]:
    """Evaluate on the validation flight, then write the report and model card into out_dir
    (and copies at report_path / card_path: the KFP HTML and Markdown artifacts).

    Returns the metrics plus `gate` (the verdict the gate task will enforce). The report
    shows that verdict, so a failed run still has its report.
    """
    from cloudml.evaluate import evaluate
    from cloudml.report import load_plots, write_report
    from cloudml.training.checkpoint import verify_stage_checkpoint

    t0 = time.perf_counter()
    cfg = config_from_json(config_json)
    out_dir = Path(out_dir)
    shards = collect_shards(shard_dirs)
    val = cfg.data.validation_flight
    if val not in shards:
        raise DataError(f"validation flight {val} was not ingested (have: {sorted(shards)})")
    histories = {
        "pretrain": Path(pretrained_dir) / "history.json",
        "finetune": Path(finetuned_dir) / "history.json",
    }
    metrics = evaluate(shards[val], verify_stage_checkpoint(finetuned_dir), cfg, out_dir, histories)
    telemetry = _telemetry(cfg.preset, "evaluate")
    telemetry.evaluation(metrics)
    verdict = gate_verdict(
        float(metrics["r2"]), float(metrics["std_ratio"]), threshold, min_std_ratio, val
    )
    summaries = ingest_summaries(shard_dirs)
    stages = stage_seconds(summaries, Path(pretrained_dir), Path(finetuned_dir))
    stages["evaluate"] = time.perf_counter() - t0
    ctx = {
        "pipeline": cfg.preset,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metrics": metrics,
        "gate": verdict.as_dict(),
        "config": json.loads(cfg.to_json()),
        "data": summaries,
        "data_source": data_source(summaries),
        "plots": load_plots(out_dir),
        "stages": stages,
    }
    html_path, md_path = write_report(out_dir, ctx)
    if report_path is not None:
        copy_file(html_path, Path(report_path))
    if card_path is not None:
        copy_file(md_path, Path(card_path))
    write_json(out_dir / "stages.json", stages, **JSON_OPTIONS)
    write_json(out_dir / "gate.json", verdict.as_dict(), **JSON_OPTIONS)
    telemetry.duration(stages["evaluate"])
    return {**metrics, "gate": verdict.as_dict()}


# --- gate and promotion ----------------------------------------------------------------
def run_gate(
    r2: float, std_ratio: float, threshold: float, min_std_ratio: float, flight: str, pipeline: str
) -> str:
    """Push the verdict (a pass also stamps cloudml_last_success_timestamp_seconds), then
    raise GateFailed unless it passed; returns the verdict line."""
    verdict = gate_verdict(r2, std_ratio, threshold, min_std_ratio, flight)
    _telemetry(pipeline, "gate").gate(verdict.passed, threshold)
    return verdict.enforce().message


def run_promote(model_dir: Path, pipeline: str, run_id: str, r2: float) -> dict[str, Any]:
    """Upload the gated model to runs/<pipeline>/<run id>/model in the store (CLOUDML_STORE),
    then make it the champion if its R² beats the current one (cloudml.store.promotion)."""
    from cloudml.store.backends import open_store
    from cloudml.store.layout import run_prefix
    from cloudml.store.manifest import upload_dir
    from cloudml.store.promotion import promote

    if not run_id:
        raise StorageError("promote: empty run id (expected the KFP pipeline job id)")
    store = open_store()
    prefix = f"{run_prefix(pipeline, run_id)}/model"
    upload_dir(store, Path(model_dir), prefix)
    decision = promote(store, pipeline, run_id, prefix, float(r2))
    _telemetry(pipeline, "promote").promotion(decision)
    log.info("promote: %s", decision.get("reason"))
    return decision


def copy_file(src: Path, dest: Path) -> None:
    """Copy src onto dest atomically (artifact outputs that mirror a file of a directory)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
