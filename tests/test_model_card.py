"""The model card: the settings actually in effect, the shipped template, the reference and
bias figures, and a loading snippet that runs against a real trained model."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cloudml.config import ModelConfig
from cloudml.ensemble import load_ensemble
from cloudml.metrics import regression_metrics
from cloudml.model import (
    CHECKPOINT_MIN_PIXELS,
    CBHNet,
    SettingInEffect,
    configure_checkpointing,
    cpu_bf16_native,
    maybe_compile,
    settings_in_effect,
)
from cloudml.model_card import TEMPLATE, build_model_card
from cloudml.report_sections import bias_rows, bias_text, duration_text, reference_rows
from cloudml.training.data import load_pool
from cloudml.training.loop import _autocast
from tests.support.train_fixtures import fast_cfg, write_shards

ROOT = Path(__file__).resolve().parents[1]
ALL_ON = {"mixed_precision": True, "torch_compile": True, "gradient_checkpointing": True}


# --- settings_in_effect ------------------------------------------------------------------------
def test_settings_on_cpu_with_small_frames_are_all_skipped_with_reasons():
    got = settings_in_effect(ALL_ON, "cpu", (21, 32), cpu_bf16=False)
    assert [(s.key, s.configured, s.in_effect) for s in got] == [
        ("mixed_precision", True, False),
        ("torch_compile", True, False),
        ("gradient_checkpointing", True, False),
    ]
    why = {s.key: s.why for s in got}
    assert why["mixed_precision"] == (
        "bf16 autocast is off on CPU (mixed_precision_cpu: false), so float32"
    )
    assert why["torch_compile"].startswith("compiled only on CUDA: this run was on CPU")
    assert why["gradient_checkpointing"].startswith(
        "used only for frames of at least 16384 px: 21x32 frames"
    )


def test_mixed_precision_on_cpu_needs_the_switch_and_native_bf16():
    asked = {**ALL_ON, "mixed_precision_cpu": True}
    on, off, unknown = (
        settings_in_effect(asked, "cpu", (21, 32), cpu_bf16=v)[0] for v in (True, False, None)
    )
    assert (on.in_effect, on.why) == (True, "")
    assert off.in_effect is False and off.why.endswith("this run's CPU has none, so float32")
    assert unknown.in_effect is None and unknown.why.endswith("was not recorded")
    # not asked: float32 on CPU whatever the CPU has; CUDA does not depend on either
    assert settings_in_effect(ALL_ON, "cpu", (21, 32), cpu_bf16=True)[0].in_effect is False
    assert settings_in_effect(ALL_ON, "cuda", (21, 32), cpu_bf16=False)[0].in_effect is True


def test_settings_on_cuda_with_full_frames_are_all_in_effect():
    assert settings_in_effect(ALL_ON, "cuda", (440, 640)) == [
        SettingInEffect("mixed_precision", True, True, ""),
        SettingInEffect("torch_compile", True, True, ""),
        SettingInEffect("gradient_checkpointing", True, True, ""),
    ]


def test_settings_switched_off_or_not_recorded():
    off = settings_in_effect({k: False for k in ALL_ON}, "cuda", (440, 640))
    assert [(s.configured, s.in_effect, s.why) for s in off] == [(False, False, "")] * 3
    unknown = settings_in_effect(ALL_ON, None, None)
    assert [s.in_effect for s in unknown] == [None, None, None]
    assert unknown[1].why == "compiled only on CUDA: the device was not recorded"
    # the threshold is inclusive, as in configure_checkpointing
    edge = settings_in_effect(ALL_ON, "cpu", (128, CHECKPOINT_MIN_PIXELS // 128))
    assert edge[2].in_effect is True


@pytest.mark.parametrize("shape", [(21, 32), (128, CHECKPOINT_MIN_PIXELS // 128), (440, 640)])
@pytest.mark.parametrize("want", [True, False])
def test_settings_agree_with_what_the_model_does(shape, want):
    """The card's statement is the training code's decision: checkpointing as
    configure_checkpointing sets it, compilation as maybe_compile does it on this CPU,
    bf16 autocast as the training loop opens it on this CPU (native bf16 or not)."""
    mcfg = replace(ModelConfig(), memory_optimized=True, gradient_checkpointing=want,
                   torch_compile=want)  # fmt: skip
    net = CBHNet(mcfg, temporal_frames=2)
    config = {"gradient_checkpointing": want, "torch_compile": want, "mixed_precision": want,
              "mixed_precision_cpu": want}  # fmt: skip
    said = {s.key: s.in_effect for s in settings_in_effect(config, "cpu", shape, cpu_bf16_native())}
    assert said["gradient_checkpointing"] is configure_checkpointing(net, shape)
    assert said["torch_compile"] is (maybe_compile(net, torch.device("cpu")) is not net)
    with _autocast(torch.device("cpu"), want, on_cpu=want):
        assert said["mixed_precision"] is torch.is_autocast_enabled("cpu")


# --- the template ships with the package -------------------------------------------------------
def test_template_is_package_data():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["cloudml"]
    shipped = {p.relative_to(ROOT / "cloudml").as_posix() for g in globs
               for p in (ROOT / "cloudml").glob(g)}  # fmt: skip
    assert f"templates/{TEMPLATE}" in shipped
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.match(r"jinja2\b", d, re.I) for d in deps)


# --- reference figures, bias, durations --------------------------------------------------------
def test_constant_predictor_rmse_is_the_spread_of_the_truth():
    rng = np.random.default_rng(3)
    y = rng.uniform(0.2, 2.0, 200)
    p = y + rng.normal(0.1, 0.3, 200)
    m = regression_metrics(y, p)
    rows = {r[0]: r for r in reference_rows(m)}
    assert rows["constant"][1] == "0.000"
    assert rows["constant"][2] == f"{np.std(y):.3f}"
    assert rows["this model"][1] == f"{m['r2']:.3f}"
    assert "ridge baseline" not in rows and "training mean" not in rows
    m["train_mean_predictor"] = {"cbh_km": 1.2345, "r2": -0.05, "rmse_km": 0.61}
    rows = {r[0]: r for r in reference_rows(m)}
    assert (
        rows["training mean"][1:3] == ("-0.050", "0.610") and "1.234 km" in rows["training mean"][3]
    )


def test_bias_by_height_rows_and_the_card():
    from cloudml.metrics import bias_by_height

    bins = bias_by_height([0.2, 0.3, 0.7, 1.7], [0.7, 0.78, 0.68, 1.2])
    m = {"bias_by_height": bins}
    assert bias_rows(m) == [("< 0.5 km", "2", "+0.490"), ("0.5–1 km", "1", "-0.020"),
                            ("1–1.5 km", "0", "—"), ("≥ 1.5 km", "1", "-0.500")]  # fmt: skip
    assert bias_rows({}) == []
    assert bias_text({"bias_km": 0.145}).endswith("overestimates the cloud base by 0.145 km.")
    assert "underestimates" in bias_text({"bias_km": -0.01}) and bias_text({}) is None
    card = build_model_card({"metrics": {"flight": "12Feb25", "bias_km": 0.145, **m}})
    limits = card.split("## Limitations and biases", 1)[1].split("\n## ", 1)[0]
    assert "+0.145 km" in limits and "| < 0.5 km | 2 | +0.490 |" in limits


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0 s"), (9.49, "9 s"), (59.6, "1 min 00 s"), (125.0, "2 min 05 s"),
     (3725.0, "1 h 02 min")],
)  # fmt: skip
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


# --- the card of a run: its sections, and a loading snippet that runs ----------------------------
SECTIONS = ("## Model details", "## Intended use", "## Out-of-scope use", "## Training data",
            "## Evaluation data", "## Metrics (validation flight, with 95% intervals)",
            "## Limitations and biases", "## How to load it", "## Input specification",
            "## Settings in effect")  # fmt: skip


def test_card_of_a_run_has_the_sections_and_its_snippet_predicts_one_batch(tmp_path, monkeypatch):
    """Train a tiny model and evaluate it with the pipeline's own steps (run_pretrain,
    run_evaluate: metrics, report, card and the shipped model/), then run the card's Python
    block in a fresh interpreter from a folder holding model/ and the validation flight's
    shard: it prints one batch of predictions, the shipped model's own."""
    from cloudml.steps import run_evaluate, run_pretrain

    monkeypatch.delenv("CLOUDML_STORE", raising=False)
    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    monkeypatch.setenv("CLOUDML_COMMIT", "0123abc")
    shards = write_shards(tmp_path / "shards", ["30Oct24", "04Nov24", "12Feb25"], n=40)
    cfg = fast_cfg(epochs=1, batch_size=16)
    run_pretrain([str(tmp_path / "shards")], cfg.to_json(), tmp_path / "pre")
    run = tmp_path / "run"
    run_evaluate([str(tmp_path / "shards")], cfg.to_json(), [tmp_path / "pre"], run, 0.3, 0.0,
                 model_dir=run / "model", run_id="tuned-test")  # fmt: skip
    card = (run / "model_card.md").read_text()
    heads = [line for line in card.splitlines() if line.startswith("## ")]
    assert [h for h in heads if h in SECTIONS] == list(SECTIONS)  # all of them, in this order
    details = card.split("## Model details", 1)[1].split("\n## ", 1)[0]
    assert "- run id: `tuned-test`" in details and "- commit: `0123abc`" in details
    assert "| torch_compile | false | no | as configured |" in card  # FAST switches it off
    assert "| mixed_precision | true | no | bf16 autocast is off on CPU" in card  # the default

    shutil.copyfile(shards["12Feb25"], run / "12Feb25.h5")
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 1
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", blocks[0]], cwd=run, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    km = np.array(out.stdout.split("[", 1)[1].split("]", 1)[0].split(), dtype=float)
    ens = load_ensemble(run / "model")
    pool = load_pool({"12Feb25": run / "12Feb25.h5"}, ["12Feb25"], ens.temporal_frames)
    want = ens.predict_pool(pool, np.arange(16)).mean(axis=0)
    assert km.shape == (16,)  # one batch of batch_size samples
    np.testing.assert_allclose(km, want, atol=5e-4)  # printed to 3 decimals
