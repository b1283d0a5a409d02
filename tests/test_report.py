"""HTML report and model card: pure builders from a context dict, and the atomic write."""

from __future__ import annotations

import base64
import re

from cloudml.gate import gate_verdict
from cloudml.report import build_model_card, build_report_html, data_rows, write_report

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
    assert "<td>R²</td><td>0.4213</td>" in html
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
        "## Data",
        "## Metrics (validation flight)",
        "## Gate",
        "## Configuration",
        "## Limits",
    ):
        assert head in card
    assert "Source: synthetic campaign" in card
    assert "| R² | 0.4213 |" in card and "| MAE (km) | 0.2000 |" in card
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
