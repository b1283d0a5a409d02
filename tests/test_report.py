"""HTML report and model card: pure builders from a context dict, and the atomic write."""

from __future__ import annotations

import base64
import re

import pytest

from cloudml.gate import gate_verdict
from cloudml.model_card import build_model_card
from cloudml.report import build_report_html, write_report
from cloudml.report_sections import (
    config_view,
    data_rows,
    gate_notes,
    member_spread,
    metric_table,
)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def _ctx(passed: bool = True) -> dict:
    verdict = gate_verdict(0.42 if passed else 0.12, 0.7, 0.3, 0.1, "12Feb25")
    return {
        "pipeline": "tuned",
        "created_utc": "2026-11-24T00:00:00Z",
        "metrics": {
            "r2": 0.4213,
            "mae_km": 0.2,
            "rmse_km": 0.3,
            "loss": 0.05,
            "std_ratio": 0.7,
            "n": 150,
            "flight": "12Feb25",
        },  # fmt: skip
        "gate": verdict.as_dict(),
        "config": {
            "preset": "tuned",
            "learning_rate": 0.0005,
            "swath_slice": [40, 480],
            "validation_flight": "12Feb25",
            "pretrain_flight": "30Oct24",
        },  # fmt: skip
        "data": {
            "30Oct24": {"n_samples": 600, "dropped": {"land": 12, "no_cloud": 40}},
            "12Feb25": {"n_samples": 150, "dropped": {}},
        },
        "data_source": "synthetic campaign",
        "plots": {"residuals.png": PNG, "pred_vs_true.png": PNG},
        "stages": {"ingest": 3.5, "pretrain": 10.0},
    }


def test_html_is_self_contained_with_plots_metrics_config_data_and_verdict():
    html = build_report_html(_ctx())
    assert html.count(f"data:image/png;base64,{PNG}") == 2
    # pred_vs_true comes before residuals whatever the dict order
    assert html.index('alt="pred_vs_true.png"') < html.index('alt="residuals.png"')
    assert not re.search(r'src="(?!data:)', html)  # nothing loaded from elsewhere
    assert "<td>R²</td><td>0.421</td>" in html
    assert "<td>learning_rate</td><td>0.0005</td>" in html
    assert "<td>swath_slice</td><td>40, 480</td>" in html
    assert "<td>30Oct24</td><td>600</td><td>land: 12, no_cloud: 40</td>" in html
    assert 'class="pass"' in html and "synthetic campaign" in html


def test_failed_gate_shows_fail_and_reason():
    html = build_report_html(_ctx(passed=False))
    assert 'class="fail"' in html and "R² 0.1200 is not above the threshold 0.3000" in html


def test_html_escapes_values():
    ctx = _ctx()
    ctx["config"]["note"] = "<script>x</script>"
    html = build_report_html(ctx)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_model_card_sections():
    card = build_model_card(_ctx())
    for head in (
        "## Training data",
        "## Evaluation data",
        "## Metrics (validation flight)",
        "## Gate",
        "## Configuration",
        "## Limitations and biases",
    ):
        assert head in card
    assert "Source: synthetic campaign" in card
    assert "| R² | 0.421 |" in card and "| MAE (km) | 0.200 |" in card
    assert "| 12Feb25 | 150 | none |" in card
    assert '"learning_rate": 0.0005' in card


def test_data_rows_sorted_and_counted():
    rows = data_rows(
        {"b": {"n_samples": 2, "dropped": {"z": 1, "a": 3, "m": 0}}, "a": {"n_samples": 1}}
    )
    assert rows == [("a", 1, "none"), ("b", 2, "a: 3, z: 1")]


def test_write_report_writes_both_files_and_no_temp_left(tmp_path):
    html_path, card_path = write_report(tmp_path / "out", _ctx())
    assert html_path.read_text() == build_report_html(_ctx())
    assert card_path.read_text() == build_model_card(_ctx())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model_card.md", "report.html"]


# --- issue 14: ensemble, intervals, baseline, a pass within noise ------------------------------
MESSAGE = (
    "gate PASSED within noise on validation flight 12Feb25: R² = 0.4197 [95% 0.2811, 0.5302] "
    "(threshold 0.3000), baseline R² = 0.1100 (must beat it by 0.0000), std ratio = 0.7463 "
    "(min 0.1000)"
)


def _member(seed: int, r2: float) -> dict:
    return {"seed": seed, "r2": r2, "mae_km": 0.2 + (0.41 - r2), "rmse_km": 0.3, "std_ratio": 0.7}


def _ens_ctx(**extra) -> dict:
    """An ensemble of 3 members beside a ridge baseline, every figure with its interval, and a
    verdict that passed within noise (its dict written as the contract gives it)."""
    ctx = _ctx()
    ctx["metrics"] = {
        "flight": "12Feb25",
        "loss": 0.05,
        "r2": 0.4197, "r2_lo": 0.2811, "r2_hi": 0.5302,
        "mae_km": 0.2, "mae_km_lo": 0.17, "mae_km_hi": 0.24,
        "rmse_km": 0.3, "rmse_km_lo": 0.25, "rmse_km_hi": 0.36,
        "std_ratio": 0.7463,
        "n": 147,
        "bias_km": -0.012,
        "bootstrap_block": 6,
        "confidence": 0.95,
        "ensemble_size": 3,
        "members": [_member(42, 0.35), _member(43, 0.41), _member(44, 0.38)],
        "member_r2_min": 0.35, "member_r2_median": 0.38, "member_r2_max": 0.41,
        "baseline": {
            "model": "ridge on centre-frame statistics + solar angles",
            "flights": ["30Oct24", "10Feb25"],
            "r2": 0.11, "r2_lo": 0.02, "r2_hi": 0.19,
            "mae_km": 0.28, "mae_km_lo": 0.25, "mae_km_hi": 0.31,
            "rmse_km": 0.38, "rmse_km_lo": 0.33, "rmse_km_hi": 0.43,
            "std_ratio": 0.3, "n": 147, "bias_km": 0.004,
        },
        "baseline_r2": 0.11,
    }  # fmt: skip
    ctx["gate"] = {
        "passed": True,
        "r2": 0.4197,
        "r2_lo": 0.2811,
        "std_ratio": 0.7463,
        "threshold": 0.3,
        "min_std_ratio": 0.1,
        "baseline_r2": 0.11,
        "skill_margin": 0.0,
        "beat_baseline": True,
        "within_noise": True,
        "flight": "12Feb25",
        "reasons": [],
        "message": MESSAGE,
    }
    for flight in ctx["data"]:
        ctx["data"][flight]["frame_shape"] = [28, 40]
    ctx["config"].update(
        temporal_frames=5,
        scale="local",
        mixed_precision=True,
        torch_compile=True,
        gradient_checkpointing=True,
        ensemble_size=3,
    )
    ctx.update(run_id="tuned-20261124T000000Z", commit="a59a7fb", device="cpu")
    ctx.update(extra)
    return ctx


def test_metric_table_puts_the_ensemble_beside_the_baseline_with_intervals():
    header, rows = metric_table(_ens_ctx()["metrics"])
    assert header == ("metric", "CNN ensemble", "baseline")
    by = {r[0]: r[1:] for r in rows}
    assert by["R²"] == ("0.420 [0.281, 0.530]", "0.110 [0.020, 0.190]")
    assert by["MAE (km)"] == ("0.200 [0.170, 0.240]", "0.280 [0.250, 0.310]")
    assert by["RMSE (km)"] == ("0.300 [0.250, 0.360]", "0.380 [0.330, 0.430]")
    assert by["bias (pred − true) (km)"] == ("-0.012", "0.004")
    assert by["samples"] == ("147", "147")
    assert by["loss"] == ("0.050", "—")  # the baseline has no training loss
    # old metrics (no members, no baseline): one column, bare values
    header, rows = metric_table(_ctx()["metrics"])
    assert header == ("metric", "CNN") and ("R²", "0.421") in rows


def test_html_shows_intervals_baseline_members_and_the_within_noise_verdict():
    html = build_report_html(_ens_ctx())
    assert "<tr><th>metric</th><th>CNN ensemble</th><th>baseline</th></tr>" in html
    assert "<td>R²</td><td>0.420 [0.281, 0.530]</td><td>0.110 [0.020, 0.190]</td>" in html
    assert "<td>MAE (km)</td><td>0.200 [0.170, 0.240]</td>" in html
    assert "<td>bias (pred − true) (km)</td><td>-0.012</td><td>0.004</td>" in html
    assert "<td>samples</td><td>147</td><td>147</td>" in html
    assert (
        "<h2>Ensemble members</h2>" in html and "Ensemble of 3 members (seeds 42, 43, 44)" in html
    )
    assert (
        "<td>0</td><td>42</td><td>0.350</td>" in html
        and "<td>2</td><td>44</td><td>0.380</td>" in html
    )
    assert "Member R²: min 0.350, median 0.380, max 0.410." in html
    assert 'class="pass">gate PASSED within noise on validation flight 12Feb25' in html
    assert 'class="noise">Passed within noise: the lower end of the R² interval (0.281)' in html
    assert "Beats the ridge baseline: yes (R² 0.420 vs baseline 0.110" in html
    assert "moving-block bootstrap" in html and "block length 6 samples" in html
    assert "fitted on the training flights (30Oct24, 10Feb25) only" in html
    assert "run id tuned-20261124T000000Z; commit a59a7fb; device cpu" in html


def test_model_card_metrics_members_uncertainty_and_gate():
    card = build_model_card(_ens_ctx())
    assert "| metric | CNN ensemble | baseline |" in card
    assert "| R² | 0.420 [0.281, 0.530] | 0.110 [0.020, 0.190] |" in card
    assert "| MAE (km) | 0.200 [0.170, 0.240] | 0.280 [0.250, 0.310] |" in card
    assert "| RMSE (km) | 0.300 [0.250, 0.360] | 0.380 [0.330, 0.430] |" in card
    assert "| bias (pred − true) (km) | -0.012 | 0.004 |" in card
    assert "| samples | 147 | 147 |" in card
    metrics = card.split("## Metrics (validation flight, with 95% intervals)", 1)[1]
    uncertainty = metrics.split("\n## ", 1)[0]  # the intervals are explained beside them
    assert "Ensemble members:\n\n| member | seed | R² |" in uncertainty
    assert "| 1 | 43 | 0.410 | 0.200 | 0.300 | 0.700 |" in uncertainty
    assert "Member R²: min 0.350, median 0.380, max 0.410." in card
    assert "95% percentile intervals from a moving-block bootstrap" in uncertainty
    assert "time order" in uncertainty and "block length 6 samples" in uncertainty
    gate = card.split("## Gate", 1)[1].split("\n## ", 1)[0]
    assert MESSAGE in gate and "passed within noise" in gate.lower()
    assert "- Passed within noise: the lower end of the R² interval (0.281)" in gate


def test_model_card_intended_use_and_the_synthetic_caveat():
    card = build_model_card(_ens_ctx())
    use = card.split("## Intended use", 1)[1].split("\n## ", 1)[0]
    assert "Research retrieval of cloud-base height from NASA ER-2 IRAI" in use
    assert "synthetic campaign" in use and "Do not use it on real frames" in use
    scope = card.split("## Out-of-scope use", 1)[1].split("\n## ", 1)[0]
    assert "- Not operational" in scope and "land, multi-layer or high cloud" in scope
    real = build_model_card(_ens_ctx(data_source="real flights"))
    use = real.split("## Intended use", 1)[1].split("\n## ", 1)[0]
    assert "Research retrieval" in use and "synthetic" not in use


def test_model_card_input_specification():
    card = build_model_card(_ens_ctx())
    spec = card.split("## Input specification", 1)[1].split("\n## ", 1)[0]
    assert "- frames: `5 x 28 x 40` float32 (temporal_frames x H x W" in spec
    assert "preprocessed by `cloudml ingest`" in spec
    assert "- sza, saa: solar zenith and solar azimuth angle of the sample, degrees." in spec
    assert "- output: cloud-base height of the lowest CPL layer, km" in spec
    # frame size not recorded in the summaries: the symbolic shape
    ctx = _ens_ctx()
    for s in ctx["data"].values():
        del s["frame_shape"]
    assert "- frames: `5 x H x W` float32" in build_model_card(ctx)


def test_model_card_run_identity():
    card = build_model_card(_ens_ctx())
    run = card.split("## Model details", 1)[1].split("\n## ", 1)[0]
    assert "- run id: `tuned-20261124T000000Z`" in run and "- commit: `a59a7fb`" in run
    assert "- device: `cpu`" in run and "- version: cloudml `0.1.0`" in run
    bare = build_model_card(_ctx())  # no run id, commit or device in ctx: said so
    run = bare.split("## Model details", 1)[1].split("\n## ", 1)[0]
    assert "- run id: `not recorded`" in run and "- commit: `not recorded`" in run
    assert "- device: `not recorded`" in run


OFF = "true in the config; not in effect: "
UNKNOWN = "true in the config; in effect unknown: "
CPU = "this run was on CPU"


@pytest.mark.parametrize(
    ("device", "shape", "mp", "tc", "ckpt"),
    [
        ("cpu", (28, 40), f"{OFF}bf16 autocast is off on CPU (mixed_precision_cpu: false), so "
         "float32",
         f"{OFF}compiled only on CUDA: {CPU} (compiling cost ~260 s",
         f"{OFF}used only for frames of at least 16384 px: 28x40 frames hold a few MB"),
        (None, None, f"{UNKNOWN}bf16 autocast needs CUDA or a CPU asked for it: the device "
         "was not recorded",
         f"{UNKNOWN}compiled only on CUDA: the device was not recorded",
         f"{UNKNOWN}used only for frames of at least 16384 px: the frame size was not "
         "recorded"),
        ("cuda", (440, 640), True, True, True),
    ],
)  # fmt: skip
def test_config_view_lists_skipped_settings_as_not_in_effect(device, shape, mp, tc, ckpt):
    cfg = {"mixed_precision": True, "torch_compile": True, "gradient_checkpointing": True}
    view = config_view({**cfg, "learning_rate": 5e-4}, device, shape, cpu_bf16=False)
    for key, want in (("mixed_precision", mp), ("torch_compile", tc),
                      ("gradient_checkpointing", ckpt)):  # fmt: skip
        got = view[key]
        assert got is True if want is True else got.startswith(want), (key, got)
    assert view["learning_rate"] == 5e-4
    # switched off stays off, and the input is not changed
    off = config_view({k: False for k in cfg}, "cpu", (28, 40))
    assert off == {k: False for k in cfg} and cfg["mixed_precision"] is True


def test_card_and_html_do_not_list_skipped_settings_as_used():
    card = build_model_card(_ens_ctx(cpu_bf16=False))
    for key in ("mixed_precision", "torch_compile", "gradient_checkpointing"):
        assert f'"{key}": true' not in card
        assert f'"{key}": "true in the config; not in effect: ' in card
        assert f"| {key} | true | no | " in card
    asked = _ens_ctx(cpu_bf16=True)  # a CPU with native bf16, and mixed_precision_cpu on
    asked["config"] = {**asked["config"], "mixed_precision_cpu": True}
    bf16 = build_model_card(asked)
    assert '"mixed_precision": true' in bf16 and "| mixed_precision | true | yes |" in bf16
    del asked["cpu_bf16"]  # an older run that did not record its CPU
    unknown = build_model_card(asked)
    assert '"mixed_precision": "true in the config; in effect unknown: ' in unknown
    html = build_report_html(_ens_ctx(cpu_bf16=False))
    assert "<td>torch_compile</td><td>true</td><td>no</td><td>compiled only on CUDA" in html
    cuda = build_model_card(_ens_ctx(device="cuda"))
    assert '"mixed_precision": true' in cuda and '"torch_compile": true' in cuda
    assert "| torch_compile | true | yes | as configured |" in cuda
    assert '"gradient_checkpointing": "true in the config; not in effect' in cuda  # 28x40


def test_gate_notes_and_member_spread():
    failed = {"passed": False, "r2": 0.12, "r2_lo": 0.01, "threshold": 0.3, "baseline_r2": 0.2,
              "skill_margin": 0.0, "beat_baseline": False, "within_noise": False}  # fmt: skip
    assert gate_notes(failed) == [
        "Beats the ridge baseline: no (R² 0.120 vs baseline 0.200, required margin 0.000)."
    ]
    # a verdict without within_noise: derived from r2_lo and the threshold
    assert gate_notes({"passed": True, "r2_lo": 0.25, "threshold": 0.3})[0].startswith(
        "Passed within noise"
    )
    assert gate_notes({"passed": True, "r2": 0.5, "threshold": 0.3}) == []
    # min/median/max from the members when the flat keys are missing
    members = [{"seed": 1, "r2": 0.3}, {"seed": 2, "r2": 0.5}, {"seed": 3, "r2": 0.4}]
    assert member_spread({"members": members}) == (0.3, 0.4, 0.5)
    assert member_spread({}) is None


def test_old_metrics_render_without_new_sections():
    card = build_model_card(_ctx())
    assert "Ensemble members" not in card and "bootstrap" not in card
    assert "## Metrics (validation flight)\n" in card  # no intervals: not promised
    assert "## Intended use" in card and "## How to load it" in card
    html = build_report_html(_ctx())
    assert "Ensemble members" not in html and "bootstrap" not in html


def test_html_plot_headings_in_words_durations_rounded_and_reference_figures():
    ctx = _ens_ctx(stages={"ingest": 9.4, "finetune": 478.6})
    ctx["plots"]["learning_curves.png"] = PNG
    html = build_report_html(ctx)
    assert "<h3>Predicted against true cloud base, validation flight 12Feb25" in html
    assert "<h3>Residuals: prediction minus true cloud base (km)" in html
    assert "<h3>Learning curves: training loss and selection-split loss per epoch" in html
    assert "<td>ingest</td><td>9 s</td>" in html and "<td>finetune</td><td>7 min 59 s</td>" in html
    assert "<h2>Reference figures</h2>" in html
    assert "<td>constant</td><td>0.000</td><td>0.394</td>" in html  # 0.3 / sqrt(1 - 0.4197)
    assert "<td>ridge baseline</td><td>0.110 [0.020, 0.190]</td>" in html
    assert "on average the model underestimates the cloud base by 0.012 km" in html
    assert "<h2>Settings in effect</h2>" in html
