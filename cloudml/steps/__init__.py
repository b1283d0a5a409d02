"""Glue between KFP component bodies and the stage functions.

Each KFP component (components/*.py) calls exactly one function of this package with its parameters
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

from cloudml.steps.common import collect_shards, copy_file, ingest_summaries, resolve_config_json
from cloudml.steps.evaluation import run_evaluate
from cloudml.steps.ingest import raw_data_source, raw_fingerprint, run_ingest
from cloudml.steps.release import run_gate, run_promote
from cloudml.steps.training import member_seeds, run_finetune, run_pretrain

__all__ = [
    "collect_shards", "copy_file", "ingest_summaries", "member_seeds", "raw_data_source",
    "raw_fingerprint", "resolve_config_json", "run_evaluate", "run_finetune", "run_gate",
    "run_ingest", "run_pretrain", "run_promote",
]  # fmt: skip
