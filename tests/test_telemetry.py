"""Telemetry: the metric contract, best-effort pushing, and real Pushgateway + Prometheus."""

from __future__ import annotations

import logging
import re
import time

import pytest

from cloudml.cluster import telemetry
from cloudml.cluster.telemetry import METRIC_NAMES, STAGE_METRICS, Telemetry
from cloudml.errors import ConfigError
from tests.support.servers import free_port, gateway_metrics, prom_query, wait_for_query

# what evaluate pushes since issue 14: intervals, the baseline, the ensemble's spread
ISSUE14_EVALUATE = {
    "cloudml_val_r2_lower",
    "cloudml_val_r2_upper",
    "cloudml_val_mae_km_lower",
    "cloudml_val_mae_km_upper",
    "cloudml_baseline_r2",
    "cloudml_val_member_r2_min",
    "cloudml_val_member_r2_max",
    "cloudml_ensemble_size",
}
CONTRACT = {
    "pretrain": {
        "cloudml_epoch",
        "cloudml_train_loss",
        "cloudml_epoch_selection_loss",
        "cloudml_learning_rate",
    },
    "evaluate": {
        "cloudml_val_r2",
        "cloudml_val_mae_km",
        "cloudml_val_rmse_km",
        "cloudml_val_loss",
        "cloudml_val_std_ratio",
        "cloudml_val_samples",
        *ISSUE14_EVALUATE,
    },
    "gate": {
        "cloudml_gate_passed",
        "cloudml_gate_threshold",
        "cloudml_last_success_timestamp_seconds",
    },
    "promote": {"cloudml_champion_r2", "cloudml_promoted"},
}
EVAL = {
    "flight": "12Feb25",
    "loss": 0.8,
    "mae_km": 0.21,
    "rmse_km": 0.3,
    "r2": 0.42,
    "std_ratio": 0.9,
    "n": 144,
}
# metrics.json since issue 14: the ensemble's figures with 95% intervals, members, baseline
EVAL_ENSEMBLE = {
    **EVAL,
    "r2_lo": 0.28,
    "r2_hi": 0.53,
    "mae_km_lo": 0.18,
    "mae_km_hi": 0.25,
    "rmse_km_lo": 0.26,
    "rmse_km_hi": 0.35,
    "bootstrap_block": 6,
    "confidence": 0.95,
    "ensemble_size": 3,
    "members": [{"seed": 42 + i, "r2": r2} for i, r2 in enumerate((0.35, 0.38, 0.41))],
    "member_r2_min": 0.35,
    "member_r2_median": 0.38,
    "member_r2_max": 0.41,
    "bias_km": -0.02,
    "baseline": {"model": "ridge", "r2": 0.11, "mae_km": 0.3},
    "baseline_r2": 0.11,
}


@pytest.fixture(autouse=True)
def fresh_log_state(monkeypatch):
    """The once-per-process log flags, reset per test."""
    monkeypatch.setattr(telemetry, "_said_unset", False)
    monkeypatch.setattr(telemetry, "_warned_urls", set())


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, url, job, registry, grouping_key, timeout):
        samples = {s.name: s.value for m in registry.collect() for s in m.samples}
        types = {m.name: m.type for m in registry.collect()}
        self.calls.append((url, job, dict(grouping_key), samples, types, timeout))


def test_metric_names_match_the_contract():
    expected = set().union(*CONTRACT.values()) | {"cloudml_stage_duration_seconds"}
    assert METRIC_NAMES == expected
    for stage, names in CONTRACT.items():
        assert STAGE_METRICS[stage] == names
    assert STAGE_METRICS["finetune"] == CONTRACT["pretrain"] and STAGE_METRICS["ingest"] == set()


def test_each_method_pushes_its_stage_names_as_gauges(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(telemetry, "pushadd_to_gateway", rec)
    url = "127.0.0.1:9"
    assert Telemetry("tuned", "finetune", url).epoch(
        {"epoch": 3, "train_loss": 1.5, "selection_loss": 1.1, "lr": 5e-4, "selection_r2": 0.2}
    )
    Telemetry("tuned", "pretrain", url).epoch(4, 1.0, 0.9, 1e-4)
    Telemetry("tuned", "evaluate", url).evaluation(EVAL)
    Telemetry("tuned", "gate", url).gate(True, 0.3, now=1234.5)
    Telemetry("tuned", "gate", url).gate(False, 0.3)
    Telemetry("tuned", "promote", url).promotion(
        {
            "promoted": False,
            "challenger_r2": 0.4,
            "champion_r2_before": 0.5,
            "champion_run_id_before": "a",
        }
    )
    Telemetry("tuned", "ingest", url).duration(12.0)

    stages = [c[2]["stage"] for c in rec.calls]
    assert stages == ["finetune", "pretrain", "evaluate", "gate", "gate", "promote", "ingest"]
    for url_, job, key, _samples, types, timeout in rec.calls:
        assert (url_, job, key["pipeline"], set(key)) == (
            url,
            "cloudml",
            "tuned",
            {"pipeline", "stage"},
        )
        assert set(types.values()) == {"gauge"} and timeout <= 5
    assert rec.calls[0][3] == {
        "cloudml_epoch": 3.0,
        "cloudml_train_loss": 1.5,
        "cloudml_epoch_selection_loss": 1.1,
        "cloudml_learning_rate": 5e-4,
    }
    assert rec.calls[2][3] == {
        "cloudml_val_r2": 0.42,
        "cloudml_val_mae_km": 0.21,
        "cloudml_val_rmse_km": 0.3,
        "cloudml_val_loss": 0.8,
        "cloudml_val_std_ratio": 0.9,
        "cloudml_val_samples": 144.0,
    }
    assert rec.calls[3][3]["cloudml_last_success_timestamp_seconds"] == 1234.5
    assert "cloudml_last_success_timestamp_seconds" not in rec.calls[4][3]  # a failed gate never
    assert rec.calls[4][3]["cloudml_gate_passed"] == 0.0
    assert rec.calls[5][3] == {"cloudml_promoted": 0.0, "cloudml_champion_r2": 0.5}
    assert rec.calls[6][3] == {"cloudml_stage_duration_seconds": 12.0}


def test_evaluation_values_push_intervals_members_and_baseline():
    assert telemetry.evaluation_values(EVAL_ENSEMBLE) == {
        "cloudml_val_r2": 0.42,
        "cloudml_val_mae_km": 0.21,
        "cloudml_val_rmse_km": 0.3,
        "cloudml_val_loss": 0.8,
        "cloudml_val_std_ratio": 0.9,
        "cloudml_val_samples": 144.0,
        "cloudml_val_r2_lower": 0.28,
        "cloudml_val_r2_upper": 0.53,
        "cloudml_val_mae_km_lower": 0.18,
        "cloudml_val_mae_km_upper": 0.25,
        "cloudml_baseline_r2": 0.11,
        "cloudml_val_member_r2_min": 0.35,
        "cloudml_val_member_r2_max": 0.41,
        "cloudml_ensemble_size": 3.0,
    }
    # every name it produces is one evaluate may push
    assert set(telemetry.evaluation_values(EVAL_ENSEMBLE)) <= telemetry.allowed_metrics("evaluate")


def test_evaluation_values_of_an_old_or_partial_metrics_dict_push_only_what_is_there():
    # before issue 14: no intervals, no members, no baseline
    old = telemetry.evaluation_values(EVAL)
    assert set(old) == set(CONTRACT["evaluate"]) - ISSUE14_EVALUATE
    # the baseline only nested (no flat copy), an interval bound that is None
    partial = {**EVAL, "baseline": {"r2": -0.05}, "r2_lo": None, "r2_hi": 0.5}
    values = telemetry.evaluation_values(partial)
    assert values["cloudml_baseline_r2"] == -0.05 and values["cloudml_val_r2_upper"] == 0.5
    assert "cloudml_val_r2_lower" not in values
    assert telemetry.evaluation_values({**EVAL, "baseline": None}) == old


def test_stage_may_not_push_other_stages_metrics(monkeypatch):
    monkeypatch.setattr(telemetry, "pushadd_to_gateway", Recorder())
    with pytest.raises(ValueError, match="metric contract"):
        Telemetry("tuned", "pretrain", "x:1").evaluation(EVAL)
    with pytest.raises(ConfigError, match="stage 'train'"):
        Telemetry("tuned", "train")


def test_no_url_pushes_nothing_with_one_info_line(monkeypatch, caplog):
    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    rec = Recorder()
    monkeypatch.setattr(telemetry, "pushadd_to_gateway", rec)
    caplog.set_level(logging.INFO, logger="cloudml.cluster.telemetry")
    for stage in ("pretrain", "evaluate"):
        t = Telemetry("tuned", stage)
        assert t.duration(1.0) is False
    assert rec.calls == []
    lines = [r for r in caplog.records if r.name == "cloudml.cluster.telemetry"]
    assert (
        len(lines) == 1
        and lines[0].levelno == logging.INFO
        and "PUSHGATEWAY_URL" in lines[0].getMessage()
    )


def test_gateway_down_returns_with_one_warning(monkeypatch, caplog):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    monkeypatch.setenv("PUSHGATEWAY_URL", url)
    caplog.set_level(logging.DEBUG, logger="cloudml.cluster.telemetry")
    t0 = time.monotonic()
    t = Telemetry("tuned", "finetune")
    results = [t.epoch(e, 1.0, 1.0, 1e-4) for e in range(1, 6)] + [
        Telemetry("tuned", "gate").gate(True, 0.3)
    ]
    assert results == [False] * 6
    assert time.monotonic() - t0 < 5
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and url in warnings[0].getMessage()


# --- real Pushgateway and Prometheus ------------------------------------------------------------
def gateway_value(gw, name: str, pipeline: str, stage: str) -> float | None:
    pattern = rf'^{name}{{(?=[^}}]*job="cloudml")(?=[^}}]*pipeline="{pipeline}")(?=[^}}]*stage="{stage}")[^}}]*}} (\S+)$'
    m = re.search(pattern, gateway_metrics(gw), re.M)
    return float(m.group(1)) if m else None


@pytest.mark.servers
def test_pushed_metrics_reach_pushgateway_and_prometheus(pushgateway, prometheus):
    t = Telemetry("promtest", "evaluate", pushgateway.url)
    assert t.evaluation(EVAL_ENSEMBLE) and t.duration(7.5)
    assert gateway_value(pushgateway, "cloudml_val_r2", "promtest", "evaluate") == 0.42
    assert gateway_value(pushgateway, "cloudml_val_r2_lower", "promtest", "evaluate") == 0.28
    assert gateway_value(pushgateway, "cloudml_baseline_r2", "promtest", "evaluate") == 0.11
    # pushadd: the duration push did not erase the evaluation metrics of the same group
    assert gateway_value(pushgateway, "cloudml_val_mae_km", "promtest", "evaluate") == 0.21
    result = wait_for_query(prometheus, 'cloudml_val_r2{pipeline="promtest"}')
    assert len(result) == 1
    labels = result[0]["metric"]
    assert (labels["pipeline"], labels["stage"], labels["job"]) == (
        "promtest",
        "evaluate",
        "cloudml",
    )
    assert float(result[0]["value"][1]) == 0.42
    # honor_labels kept the grouping key; nothing per-run or per-pod is attached
    assert set(labels) == {"__name__", "job", "pipeline", "stage"}
    assert prom_query(prometheus, 'cloudml_val_r2{pipeline="promtest", job="pushgateway"}') == []


@pytest.mark.servers
def test_last_success_survives_a_failed_run(pushgateway):
    gate = Telemetry("lasttest", "gate", pushgateway.url)
    assert gate.gate(True, 0.3, now=1700000000.0)
    assert (
        gateway_value(pushgateway, "cloudml_last_success_timestamp_seconds", "lasttest", "gate")
        == 1.7e9
    )
    assert Telemetry("lasttest", "gate", pushgateway.url).gate(False, 0.3)
    assert gateway_value(pushgateway, "cloudml_gate_passed", "lasttest", "gate") == 0.0
    assert (
        gateway_value(pushgateway, "cloudml_last_success_timestamp_seconds", "lasttest", "gate")
        == 1.7e9
    )


def test_experiment_configs_carry_a_bounded_variant_label():
    from cloudml.cluster.telemetry import Telemetry, grouping_key

    assert grouping_key("tuned", "evaluate") == {"pipeline": "tuned", "stage": "evaluate"}
    assert grouping_key("sweep.pure_mae", "finetune") == {
        "pipeline": "sweep", "stage": "finetune", "variant": "pure_mae",
    }  # fmt: skip
    assert grouping_key("lofo.12Feb25", "evaluate")["variant"] == "12Feb25"
    # a dot in a plain preset name is not an experiment label
    assert grouping_key("my.preset", "gate") == {"pipeline": "my.preset", "stage": "gate"}
    assert Telemetry("lofo.30Oct24", "evaluate", url="").grouping_key["variant"] == "30Oct24"
