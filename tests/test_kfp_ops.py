"""submit / schedule with the real kfp.Client against the loopback v2beta1 stand-in.

No Kubeflow API server is exercised here: tests/support/kfp_standin.py records what the client
sends, and these tests assert those requests.
"""

from __future__ import annotations

import socket

import pytest
import yaml

from cloudml.cli import main
from cloudml.cluster import settings as platform
from cloudml.cluster import submit as kfp_ops
from cloudml.errors import ConfigError
from tests.support.kfp_standin import API, KfpStandin


def _point_at(s: KfpStandin, monkeypatch, tmp_path, token: str | None = None) -> KfpStandin:
    """Environment of a submit against stand-in `s`, with `token` as KFP_TOKEN (or none)."""
    monkeypatch.setenv("KFP_HOST", s.url)
    if token is None:
        monkeypatch.delenv("KFP_TOKEN", raising=False)
    else:
        monkeypatch.setenv("KFP_TOKEN", token)
    monkeypatch.delenv("KFP_UI_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    monkeypatch.chdir(tmp_path)  # build/pipelines/<preset>.yaml lands in tmp_path
    return s


@pytest.fixture
def standin(monkeypatch, tmp_path):
    with KfpStandin() as s:
        yield _point_at(s, monkeypatch, tmp_path)


def _uploaded_spec(standin: KfpStandin, path: str) -> dict:
    (req,) = standin.find("POST", f"{API}/pipelines/{path}")
    return yaml.safe_load_all(req[3]).__next__()


def test_submit_creates_pipeline_experiment_and_run(standin, capsys):
    rc = main(["submit", "--pipeline", "tuned", "--set", "epochs=3", "--threshold", "0.25"])
    assert rc == 0
    spec = _uploaded_spec(standin, "upload")
    assert spec["pipelineInfo"]["name"] == "cloudml-tuned"
    assert spec["root"]["inputDefinitions"]["parameters"]["learning_rate"]["defaultValue"] == 0.0005
    (pipeline,) = standin.pipelines.values()
    assert pipeline["display_name"] == "cloudml-tuned"
    (exp,) = standin.experiments.values()
    assert exp["display_name"] == "cloudml"
    (run,) = standin.runs.values()
    assert run["experiment_id"] == exp["experiment_id"]
    assert run["runtime_config"]["parameters"] == {"epochs": 3, "threshold": 0.25}
    assert run["service_account"] == platform.SERVICE_ACCOUNT
    ref = run["pipeline_version_reference"]
    assert ref["pipeline_id"] == pipeline["pipeline_id"]
    assert (
        ref["pipeline_version_id"]
        == standin.versions[pipeline["pipeline_id"]][0]["pipeline_version_id"]
    )
    out = capsys.readouterr().out
    assert f"{standin.url}/#/runs/details/{run['run_id']}" in out


def test_second_submit_uploads_a_new_version_and_reuses_experiment(standin):
    assert main(["submit", "--pipeline", "tuned"]) == 0
    assert main(["submit", "--pipeline", "tuned"]) == 0
    assert len(standin.pipelines) == 1 and len(standin.experiments) == 1
    (pid,) = standin.pipelines
    assert len(standin.versions[pid]) == 2
    (req,) = standin.find("POST", f"{API}/pipelines/upload_version")
    assert req[2]["pipelineid"] == [pid] and req[2]["name"][0].startswith("cloudml-tuned-")
    newest = standin.versions[pid][0]["pipeline_version_id"]
    last_run = list(standin.runs.values())[-1]
    assert last_run["pipeline_version_reference"]["pipeline_version_id"] == newest
    assert last_run["runtime_config"]["parameters"] == {}


def test_schedule_replaces_existing_schedule(standin, capsys):
    assert main(["schedule", "--pipeline", "baseline", "--cron", "0 0 6 * * 1"]) == 0
    (first,) = standin.recurring.values()
    assert first["display_name"] == "cloudml-baseline-schedule"
    assert first["trigger"]["cron_schedule"]["cron"] == "0 0 6 * * 1"
    assert int(first["max_concurrency"]) == 1
    assert first["no_catchup"] is True
    assert first["mode"] == "ENABLE"
    assert first["service_account"] == platform.SERVICE_ACCOUNT

    assert main(["schedule", "--pipeline", "baseline", "--cron", "0 30 2 * * *"]) == 0
    (second,) = standin.recurring.values()  # the first one is gone
    assert second["recurring_run_id"] != first["recurring_run_id"]
    assert second["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * *"
    (delete,) = [r for r in standin.requests if r[0] == "DELETE"]
    assert delete[1] == f"{API}/recurringruns/{first['recurring_run_id']}"
    assert "replaced recurring run(s) " + first["recurring_run_id"] in capsys.readouterr().out


def test_schedule_rejects_five_field_cron_before_contacting_server(standin, capsys):
    assert main(["schedule", "--pipeline", "tuned", "--cron", "0 6 * * 1"]) == 1
    assert "six fields" in capsys.readouterr().err
    assert standin.requests == []


@pytest.mark.parametrize(
    "expr",
    ["0 0 6 * * 1", "*/15 * * * * *", "0 0 0 1,15 * ?", "0 0 9 ? * 1-5", " 0  0 6 * * 1 "],
)
def test_validate_cron_accepts(expr):
    assert kfp_ops.validate_cron(expr) == " ".join(expr.split())


@pytest.mark.parametrize(
    "expr,fragment",
    [
        ("0 6 * * 1", "six fields"),
        ("60 0 6 * * 1", "second field"),
        ("0 0 24 * * 1", "hour field"),
        ("0 0 6 0 * 1", "day-of-month field"),
        ("0 0 6 * 13 1", "month field"),
        ("0 0 6 * * 5-2", "backwards"),
        ("0 */0 6 * * 1", "step"),
        ("0 0 6 * * mon!", "cannot parse"),
    ],
)
def test_validate_cron_rejects(expr, fragment):
    with pytest.raises(ConfigError, match=fragment):
        kfp_ops.validate_cron(expr)


def test_run_parameters_rejects_unknown_key():
    with pytest.raises(ConfigError, match="unknown key 'epochz'"):
        kfp_ops.run_parameters("tuned", ["epochz=3"])


def test_missing_kfp_host(monkeypatch, capsys):
    monkeypatch.delenv("KFP_HOST", raising=False)
    assert main(["submit", "--pipeline", "tuned"]) == 1
    assert "KFP_HOST is not set" in capsys.readouterr().err


def test_unreachable_host_names_it(monkeypatch, capsys, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KFP_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.chdir(tmp_path)
    assert main(["submit", "--pipeline", "tuned"]) == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "unreachable" in err


def test_rejected_token_names_host(monkeypatch, tmp_path, capsys):
    with KfpStandin(token="right") as s:
        _point_at(s, monkeypatch, tmp_path, token="wrong")
        assert main(["submit", "--pipeline", "tuned"]) == 1
    err = capsys.readouterr().err
    assert s.url in err and "HTTP 401" in err and "KFP_TOKEN" in err


def test_token_is_sent_as_bearer(monkeypatch, tmp_path):
    with KfpStandin(token="sesame") as s:
        _point_at(s, monkeypatch, tmp_path, token="sesame")
        assert main(["submit", "--pipeline", "tuned"]) == 0
        assert len(s.runs) == 1


def test_server_rejection_is_a_clear_error(standin, capsys):
    # listed but unknown to the version store: upload_version answers 404
    standin.pipelines["ghost"] = {"pipeline_id": "ghost", "display_name": "cloudml-tuned"}
    assert main(["submit", "--pipeline", "tuned"]) == 1
    err = capsys.readouterr().err
    assert standin.url in err and "rejected upload of a version of cloudml-tuned" in err


@pytest.mark.parametrize("kind", ["sweep", "lofo", "sweep-lofo"])
def test_submit_experiment_creates_its_pipeline_and_run(standin, kind):
    """make submit PIPELINE=sweep / lofo / sweep-lofo: the experiment's own pipeline (base
    preset tuned), the overrides as run parameters."""
    assert main(["submit", "--pipeline", kind, "--set", "epochs=2"]) == 0
    spec = _uploaded_spec(standin, "upload")
    assert spec["pipelineInfo"]["name"] == f"cloudml-{kind}"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["learning_rate"]["defaultValue"] == 0.0005  # tuned's
    assert ("variants" in params) == kind.startswith("sweep")
    assert ("gate_mean" in params) == (kind == "lofo")
    (pipeline,) = standin.pipelines.values()
    assert pipeline["display_name"] == f"cloudml-{kind}"
    (run,) = standin.runs.values()
    assert run["display_name"].startswith(f"cloudml-{kind}-")
    assert run["runtime_config"]["parameters"] == {"epochs": 2}


def test_submit_sweep_with_a_variants_file(standin, tmp_path):
    (tmp_path / "v.yaml").write_text("- name: a\n  overrides: {weight_decay: 0.1}\n- name: b\n")
    assert main(["submit", "--pipeline", "sweep", "--variants", str(tmp_path / "v.yaml")]) == 0
    (run,) = standin.runs.values()
    assert run["runtime_config"]["parameters"] == {
        "variants": [{"name": "a", "overrides": {"weight_decay": 0.1}},
                     {"name": "b", "overrides": {}}],
    }  # fmt: skip


def test_submit_sweep_rejects_a_bad_variant_before_contacting_server(standin, tmp_path, capsys):
    (tmp_path / "v.yaml").write_text("- name: a\n  overrides: {epochs: 0}\n")
    assert main(["submit", "--pipeline", "sweep", "--variants", str(tmp_path / "v.yaml")]) == 1
    assert "variant a" in capsys.readouterr().err and standin.requests == []
