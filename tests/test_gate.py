"""The quality gate: R² strictly above the threshold, and no collapsed model."""

from __future__ import annotations

import json
import math
import re

import pytest

from cloudml.cli import main
from cloudml.errors import GateFailed
from cloudml.gate import enforce_gate, gate_from_metrics_file, gate_verdict, verdict_from_metrics


def test_passes_above_threshold():
    v = gate_verdict(0.31, 0.8, threshold=0.3, min_std_ratio=0.1, flight="12Feb25")
    assert v.passed and v.reasons == []
    assert "PASSED" in v.message and "12Feb25" in v.message


@pytest.mark.parametrize("r2", [0.3, 0.29, -0.0927, math.nan])
def test_fails_at_or_below_threshold_with_r2_threshold_and_flight(r2):
    with pytest.raises(GateFailed) as e:
        enforce_gate(r2, 0.8, threshold=0.3, min_std_ratio=0.1, flight="12Feb25")
    msg = str(e.value)
    assert "12Feb25" in msg and "threshold 0.3000" in msg
    assert (f"R² = {r2:.4f}") in msg


def test_collapsed_model_fails_even_with_good_r2():
    with pytest.raises(GateFailed, match="collapsed model: prediction/target std ratio 0.0500"):
        enforce_gate(0.9, 0.05, threshold=0.3, min_std_ratio=0.1, flight="12Feb25")


def test_both_reasons_listed():
    v = gate_verdict(0.1, 0.01, threshold=0.3, min_std_ratio=0.1, flight="f")
    assert not v.passed and len(v.reasons) == 2


def test_min_std_ratio_zero_disables_collapse_check():
    assert gate_verdict(0.5, 0.0, threshold=0.3, min_std_ratio=0.0).passed


def test_gate_exit_code_from_cli(tmp_path, capsys):
    m = tmp_path / "metrics.json"
    m.write_text(
        json.dumps({"r2": 0.12, "std_ratio": 0.6, "flight": "12Feb25", "baseline_r2": 0.05})
    )
    assert main(["gate", "--metrics", str(m)]) == GateFailed.exit_code == 1
    assert "R² = 0.1200" in capsys.readouterr().err
    assert main(["gate", "--metrics", str(m), "--threshold", "0.1"]) == 0
    assert main(["gate", "--metrics", str(m), "--threshold", "0.1", "--skill-margin", "0.1"]) == 1
    assert "does not beat the ridge baseline's 0.0500" in capsys.readouterr().err


def test_metrics_file_missing_key_names_file(tmp_path):
    m = tmp_path / "metrics.json"
    m.write_text(json.dumps({"r2": 0.5}))
    with pytest.raises(Exception, match=f"{m}: missing key"):
        gate_from_metrics_file(m)


def test_pipeline_gate_step_raises_with_message_and_needs_no_pushgateway(monkeypatch):
    from cloudml.steps import run_gate

    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    assert run_gate(0.5, 0.9, 0.3, 0.1, "12Feb25", "tuned").startswith("gate PASSED")
    with pytest.raises(GateFailed, match=r"R² = 0.2000 \(threshold 0.3000\)"):
        run_gate(0.2, 0.9, 0.3, 0.1, "12Feb25", "tuned")


def test_enforce_returns_the_verdict_or_raises_its_message():
    passed = gate_verdict(0.5, 0.9, 0.3, 0.1, "12Feb25")
    assert passed.enforce() is passed
    failed = gate_verdict(0.2, 0.9, 0.3, 0.1, "12Feb25")
    with pytest.raises(GateFailed, match=re.escape(failed.message)):
        failed.enforce()


def test_verdict_from_metrics_names_the_flight():
    m = {"r2": 0.5, "std_ratio": 0.9, "baseline_r2": 0.2, "r2_lo": 0.35, "r2_hi": 0.6}
    assert verdict_from_metrics(m, 0.3, 0.1, "12Feb25").flight == "12Feb25"
    assert verdict_from_metrics({**m, "flight": "30Oct24"}, 0.3, 0.1, "12Feb25").flight == "30Oct24"
    same = gate_verdict(0.5, 0.9, 0.3, 0.1, "?", r2_interval=(0.35, 0.6), baseline_r2=0.2,
                        beat_baseline=True)  # fmt: skip
    assert verdict_from_metrics(m, 0.3, 0.1) == same and same.passed and not same.within_noise


def test_cli_step_and_enforce_gate_fail_with_one_message(tmp_path, capsys, monkeypatch):
    from cloudml.steps import run_gate

    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    base = {"baseline_r2": 0.05, "beat_baseline": True}
    expected = gate_verdict(0.12, 0.6, 0.3, 0.1, "12Feb25", **base).message
    m = tmp_path / "metrics.json"
    m.write_text(
        json.dumps({"r2": 0.12, "std_ratio": 0.6, "flight": "12Feb25", "baseline_r2": 0.05})
    )
    assert main(["gate", "--metrics", str(m)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {expected}"
    for enforce in (
        lambda: enforce_gate(0.12, 0.6, 0.3, 0.1, "12Feb25", **base),
        lambda: run_gate(0.12, 0.6, 0.3, 0.1, "12Feb25", "tuned", **base),
        lambda: gate_from_metrics_file(m),
    ):
        with pytest.raises(GateFailed) as e:
            enforce()
        assert str(e.value) == expected


def test_the_model_must_beat_the_baseline_by_the_skill_margin():
    kw = {"r2_interval": (0.35, 0.6), "beat_baseline": True}
    assert gate_verdict(0.5, 0.9, 0.3, 0.1, "f", baseline_r2=0.49, **kw).passed
    tied = gate_verdict(0.5, 0.9, 0.3, 0.1, "f", baseline_r2=0.5, **kw)
    assert not tied.passed and "does not beat the ridge baseline's 0.5000" in tied.message
    margin = gate_verdict(0.5, 0.9, 0.3, 0.1, "f", baseline_r2=0.45, skill_margin=0.1, **kw)
    assert not margin.passed and "skill_margin 0.1000" in margin.message
    missing = gate_verdict(0.5, 0.9, 0.3, 0.1, "f", **kw)
    assert not missing.passed and "no baseline R²" in missing.message
    off = gate_verdict(0.5, 0.9, 0.3, 0.1, "f", r2_interval=(0.35, 0.6), baseline_r2=0.7)
    assert off.passed and "baseline R² = 0.7000 (not gated)" in off.message


def test_a_pass_whose_interval_reaches_below_the_threshold_is_within_noise():
    kw = {"baseline_r2": 0.1, "beat_baseline": True}
    clear = gate_verdict(0.5, 0.9, 0.3, 0.1, "12Feb25", r2_interval=(0.31, 0.6), **kw)
    noisy = gate_verdict(0.35, 0.9, 0.3, 0.1, "12Feb25", r2_interval=(0.2, 0.5), **kw)
    assert clear.passed and not clear.within_noise
    assert clear.message.startswith(
        "gate PASSED on validation flight 12Feb25: R² = 0.5000 [95% 0.3100, 0.6000]"
    )
    assert noisy.passed and noisy.within_noise and noisy.enforce() is noisy
    assert noisy.message.startswith("gate PASSED within noise on validation flight 12Feb25")
    assert noisy.message.endswith("the interval's lower end 0.2000 does not clear the threshold")
    assert noisy.as_dict()["within_noise"] is True
    assert not gate_verdict(0.2, 0.9, 0.3, 0.1, r2_interval=(0.1, 0.3), **kw).within_noise
