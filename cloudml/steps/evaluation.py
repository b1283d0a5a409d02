"""evaluate task: the ensemble's members + shards -> metrics, report, model card, ensemble."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from cloudml.errors import DataError
from cloudml.fileio import write_json
from cloudml.gate import DEFAULT_BEAT_BASELINE, DEFAULT_SKILL_MARGIN, verdict_from_metrics
from cloudml.steps.common import (
    JSON_OPTIONS,
    _telemetry,
    collect_shards,
    config_from_json,
    copy_file,
    ingest_summaries,
)


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
    summaries: dict[str, dict[str, Any]], member_dirs: list[Path]
) -> dict[str, float]:
    """Seconds per stage: ingest from the ingest summaries, pretrain and finetune summed over
    the ensemble's members (each finetuned artifact carries its pretrain summary)."""
    out: dict[str, float] = {}
    if summaries:
        out["ingest"] = float(sum(float(s.get("seconds", 0.0)) for s in summaries.values()))
    for stage, name in (("pretrain", "pretrain_summary.json"), ("finetune", "summary.json")):
        found = [Path(d) / name for d in member_dirs if (Path(d) / name).is_file()]
        if found:
            out[stage] = float(sum(json.loads(f.read_text()).get("seconds", 0.0) for f in found))
    return out


def _histories(member_dirs: list[Path]) -> dict[str, Path]:
    """Learning curves of the first member (both stages), the others' finetune curves."""
    out: dict[str, Path] = {}
    for i, d in enumerate(member_dirs):
        if i == 0 and (Path(d) / "pretrain_history.json").is_file():
            out["pretrain, member 0"] = Path(d) / "pretrain_history.json"
        if (Path(d) / "history.json").is_file():
            out[f"finetune, member {i}"] = Path(d) / "history.json"
    return out


# the scalars evaluate's KFP Metrics artifact shows (the UI lists them in this order)
UI_METRICS = ("r2", "r2_lo", "r2_hi", "mae_km", "mae_km_lo", "mae_km_hi", "rmse_km",
              "rmse_km_lo", "rmse_km_hi", "bias_km", "loss",
              "std_ratio", "n", "ensemble_size", "member_r2_min", "member_r2_median",
              "member_r2_max", "baseline_r2")  # fmt: skip


def ui_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """evaluate's metrics -> the scalars of its Metrics artifact: UI_METRICS that are present,
    the bias per true-height range (bias_km_true_<range>, n_true_<range>) and every member's
    R² (member_seed<seed>_r2). Pure."""
    from cloudml.metrics import flat_bias_metrics

    out = {k: float(metrics[k]) for k in UI_METRICS if metrics.get(k) is not None}
    out.update(flat_bias_metrics(metrics.get("bias_by_height", {})))
    for x in metrics.get("members", []):
        out[f"member_seed{x['seed']}_r2"] = float(x["r2"])
    return out


def run_evaluate(
    shard_dirs: list[str],
    config_json: str,
    member_dirs: list[str | Path],
    out_dir: Path,
    threshold: float,
    min_std_ratio: float,
    report_path: Path | None = None,
    card_path: Path | None = None,
    *,
    model_dir: Path | None = None,
    beat_baseline: bool = DEFAULT_BEAT_BASELINE,
    skill_margin: float = DEFAULT_SKILL_MARGIN,
    run_id: str = "",
) -> dict[str, Any]:
    """Evaluate the ensemble of the finetuned members on the validation flight (the ridge
    baseline fitted on the training flights beside it), then write the report and model
    card into out_dir (and copies at report_path / card_path: the KFP HTML and Markdown
    artifacts) and, with model_dir, the shipped model: the members with their sha256s.

    Returns the metrics plus `gate` (the verdict the gate task will enforce). The report
    shows that verdict, so a failed run still has its report.
    """
    from cloudml.ensemble import write_ensemble
    from cloudml.evaluate import evaluate
    from cloudml.model import cpu_bf16_native
    from cloudml.report import load_plots, write_report
    from cloudml.training.checkpoint import verify_stage_checkpoint

    t0 = time.perf_counter()
    cfg = config_from_json(config_json)
    out_dir, member_dirs = Path(out_dir), [Path(d) for d in member_dirs]
    shards = collect_shards(shard_dirs)
    val = cfg.data.validation_flight
    if val not in shards:
        raise DataError(f"validation flight {val} was not ingested (have: {sorted(shards)})")
    members = [verify_stage_checkpoint(d) for d in member_dirs]  # changed since finetune: refused
    training = {f: shards[f] for f in cfg.data.training_flights if f in shards}
    metrics = evaluate(shards[val], members, cfg, out_dir, _histories(member_dirs),
                       training_shards=training)  # fmt: skip
    if model_dir is not None:
        write_ensemble(members, Path(model_dir))
        # which config (and experiment variant / fold, its preset label) the model came from
        write_json(Path(model_dir) / "config.json", json.loads(cfg.to_json()), **JSON_OPTIONS)
    telemetry = _telemetry(cfg.preset, "evaluate")
    telemetry.evaluation(metrics)
    verdict = verdict_from_metrics(metrics, threshold, min_std_ratio, val,
                                   beat_baseline=beat_baseline, skill_margin=skill_margin)  # fmt: skip
    summaries = ingest_summaries(shard_dirs)
    stages = stage_seconds(summaries, member_dirs)
    stages["evaluate"] = time.perf_counter() - t0
    device = _device()
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
        "device": device,
        # whether this CPU runs bf16 natively (mixed_precision_cpu can apply on it)
        **({"cpu_bf16": cpu_bf16_native()} if device == "cpu" else {}),
        **({"run_id": run_id} if run_id else {}),
        **({"commit": os.environ["CLOUDML_COMMIT"]} if os.environ.get("CLOUDML_COMMIT") else {}),
    }
    html_path, md_path = write_report(out_dir, ctx)
    if report_path is not None:
        copy_file(html_path, Path(report_path))
    if card_path is not None:
        copy_file(md_path, Path(card_path))
    write_json(out_dir / "stages.json", stages, **JSON_OPTIONS)
    write_json(out_dir / "config.json", ctx["config"], **JSON_OPTIONS)
    write_json(out_dir / "gate.json", verdict.as_dict(), **JSON_OPTIONS)
    telemetry.duration(stages["evaluate"])
    return {**metrics, "gate": verdict.as_dict()}


def _device() -> str:
    """'cuda' or 'cpu': where the members were evaluated (and, in one pipeline, trained)."""
    from cloudml.training.loop import device_for

    return device_for().type
