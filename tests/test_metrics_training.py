"""What the training tasks show in the Kubeflow UI: Metrics scalars, TensorBoard event files
that read back the per-epoch values, the viewer's metadata; and evaluate's scalars."""

from __future__ import annotations

import json

import pytest

from cloudml.curves import read_scalars, tensorboard_ui_metadata, write_curves
from cloudml.steps.common import training_metrics, training_outputs
from cloudml.steps.evaluation import ui_metrics

ROWS = [
    {"stage": "finetune", "epoch": 1, "train_loss": 0.9, "selection_loss": 0.8,
     "selection_r2": -0.25, "lr": 1e-4, "seconds": 2.5},
    {"stage": "finetune", "epoch": 2, "train_loss": 0.7, "selection_loss": 0.75,
     "selection_r2": 0.125, "lr": 5e-4, "seconds": 2.0},
]  # fmt: skip
SUMMARY = {"stage": "finetune", "epochs_run": 2, "best_epoch": 2, "best_selection_loss": 0.75,
           "stopped_early": False}  # fmt: skip


def test_event_file_reads_back_every_epoch(tmp_path):
    write_curves(ROWS, tmp_path, "finetune")
    s = read_scalars(tmp_path)
    assert set(s) == {f"finetune/{k}" for k in
                      ("train_loss", "selection_loss", "selection_r2", "learning_rate",
                       "epoch_seconds")}  # fmt: skip
    assert s["finetune/selection_loss"] == [(1, pytest.approx(0.8)), (2, pytest.approx(0.75))]
    assert s["finetune/selection_r2"] == [(1, -0.25), (2, 0.125)]  # exact in float32
    assert [step for step, _ in s["finetune/learning_rate"]] == [1, 2]


def test_training_outputs_write_curves_of_both_stages_and_viewer_metadata(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "history.json").write_text(json.dumps(ROWS))
    pre = [{**r, "stage": "pretrain", "train_loss": r["train_loss"] + 1} for r in ROWS[:1]]
    (model / "pretrain_history.json").write_text(json.dumps(pre))
    ui = tmp_path / "ui.json"
    metrics = tmp_path / "metrics"
    shown = training_outputs(SUMMARY, model, tmp_path / "curves", "minio://mlpipeline/a/b", ui,
                             metrics)  # fmt: skip
    assert shown == {"epochs_run": 2.0, "best_epoch": 2.0, "best_selection_loss": 0.75,
                     "stopped_early": 0.0}  # fmt: skip
    # the Metrics artifact has a file (kfp.local's cache needs every output artifact's file)
    assert json.loads(metrics.read_text()) == shown
    s = read_scalars(tmp_path / "curves")
    assert s["pretrain/train_loss"] == [(1, pytest.approx(1.9))]
    assert len(s["finetune/train_loss"]) == 2
    assert json.loads(ui.read_text()) == {
        "outputs": [{"type": "tensorboard", "source": "s3://mlpipeline/a/b"}]
    }


def test_training_metrics_flags_early_stop():
    assert training_metrics({**SUMMARY, "stopped_early": True})["stopped_early"] == 1.0
    assert tensorboard_ui_metadata("/tmp/x")["outputs"][0]["source"] == "/tmp/x"


def test_evaluate_ui_metrics_are_scalars_with_bias_by_height():
    m = {"r2": 0.4, "bias_km": 0.1, "n": 3, "gate": {"passed": True}, "baseline": {"r2": 0.1},
         "members": [{"seed": 42, "r2": 0.3}],
         "bias_by_height": {"lt0.5": {"bias_km": 0.5, "n": 1}, "ge1.5": {"bias_km": None, "n": 0}}}  # fmt: skip
    assert ui_metrics(m) == {"r2": 0.4, "bias_km": 0.1, "n": 3.0, "member_seed42_r2": 0.3,
                             "bias_km_true_lt0.5": 0.5, "n_true_lt0.5": 1.0,
                             "n_true_ge1.5": 0.0}  # fmt: skip
