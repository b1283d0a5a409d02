"""`cloudml run`: pure helpers, then two end-to-end runs on KFP's local runner (slow).

The end-to-end runs use a tiny setup (two flights: pretrain 30Oct24, validate 12Feb25;
one epoch; 3 frames; no torch.compile) so each finishes in about a minute on two cores.
A one-epoch model is not expected to learn anything, so the passing run sets the gate
where any finite R² clears it (threshold -1e9, collapse check off): it tests the plumbing,
not the model. The failing run asks for R² > 0.99, which such a model cannot reach.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cloudml.cli import main
from cloudml.cluster.local_run import (
    CAMPAIGN_MARKER,
    _failed_task,
    ensure_campaign,
    pipeline_arguments,
    promotion_text,
)
from cloudml.config import load_config
from cloudml.steps import collect_shards, raw_data_source

TINY = [
    "--set", "flights=[30Oct24,12Feb25]",
    "--set", "epochs=1",
    "--set", "temporal_frames=3",
    "--set", "batch_size=32",
    "--set", "torch_compile=false",
    "--set", "gradient_checkpointing=false",
    "--set", "memory_optimized=true",
    "--set", "ensemble_size=2",
]  # fmt: skip
RUN_FILES = {"metrics.json", "report.html", "model_card.md", "predictions.csv", "model"}


def test_failed_task_parses_kfp_local_message():
    msg = "Pipeline \x1b[95m'cloudml-tuned'\x1b[0m finished with status FAILURE. Inner task failed: \x1b[96m'gate'\x1b[0m."
    assert _failed_task(msg) == "gate"
    assert _failed_task("Inner task failed: 'ingest' inside 'for-loop-1'.") == "ingest"


def test_pipeline_arguments_cover_every_parameter():
    from pipelines.training import pipeline_parameters

    cfg = load_config("tuned", {"scale": "local"})
    args = pipeline_arguments(cfg, "/data/raw", 0.3, 0.1)
    params = pipeline_parameters("tuned")
    assert set(args) == set(params)
    assert args["scale"] == "local" and args["raw_uri"] == "/data/raw"
    assert isinstance(args["flights"], list) and isinstance(args["swath_slice"], list)


def test_promotion_text_says_what_became_of_the_run():
    champ = {"run_id": "old", "r2": 0.41}
    assert promotion_text("tuned", False, False, False, 0.5, champ, champ) == (
        "not attempted: only a run that passes the gate may be promoted"
    )
    first = promotion_text("tuned", True, True, True, 0.36, None, {"run_id": "j1", "r2": 0.36})
    assert first == "this run (job id j1) is the first champion of tuned (R² 0.3600)"
    kept = promotion_text("tuned", True, True, False, 0.30, champ, champ)
    assert kept == "not promoted: R² 0.3000 does not beat champion run old (0.4100), which stays"


def test_ensure_campaign_generates_once_and_marks_synthetic(tmp_path):
    made = ensure_campaign(tmp_path, ("12Feb25",), "local")
    assert made == ["12Feb25"]
    marker = json.loads((tmp_path / CAMPAIGN_MARKER).read_text())
    assert marker["flights"] == ["12Feb25"] and marker["source"] == "synthetic campaign"
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "12Feb25").iterdir())
    assert ensure_campaign(tmp_path, ("12Feb25",), "local") == []  # reused, not rewritten
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "12Feb25").iterdir()) == before
    assert raw_data_source(tmp_path, "12Feb25").startswith("synthetic campaign")
    assert raw_data_source(tmp_path, "30Oct24").startswith("raw flight files")


def test_collect_shards_rejects_duplicates(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "30Oct24.h5").write_bytes(b"")
    with pytest.raises(Exception, match="flight 30Oct24 ingested twice"):
        collect_shards([tmp_path / "a", tmp_path / "b"])
    assert collect_shards([tmp_path / "a"]) == {"30Oct24": tmp_path / "a" / "30Oct24.h5"}


def test_bad_override_fails_before_anything_runs(tmp_path, capsys):
    rc = main(["run", "--set", "epochs=0", "--data-dir", str(tmp_path / "raw"),
               "--runs-dir", str(tmp_path / "runs")])  # fmt: skip
    assert rc == 1 and "epochs: must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "raw").exists() and not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("raw")
    ensure_campaign(d, ("30Oct24", "12Feb25"), "local")
    return d


def _run(tmp_path: Path, raw_dir: Path, *extra: str) -> tuple[int, Path, str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["run", "--pipeline", "tuned", *TINY, *extra, "--data-dir", str(raw_dir),
                   "--runs-dir", str(tmp_path / "runs")])  # fmt: skip
    out = buf.getvalue()
    last = out.strip().splitlines()[-1].split()  # "run folder  <path>" ends the output
    assert last[:2] == ["run", "folder"], out
    return rc, Path(last[2]), out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_local_run_passes_gate_then_a_cached_rerun_fails_it(tmp_path, raw_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # build/kfp-local lands in tmp_path
    # a one-epoch model: the gate's thresholds and the baseline criterion are switched off
    rc, run_dir, out = _run(tmp_path, raw_dir, "--threshold=-1e9", "--min-std-ratio=0",
                            "--no-baseline", "--cache")  # fmt: skip
    assert rc == 0, out
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.startswith("tuned-")
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    m = json.loads((run_dir / "metrics.json").read_text())
    for key in ("r2", "mae_km", "rmse_km", "loss", "std_ratio", "n", "gate_passed", "threshold"):
        assert key in m, key
    assert m["gate_passed"] is True and m["threshold"] == -1e9 and m["flight"] == "12Feb25"
    assert m["promoted"] is True  # first model in a fresh local store becomes the champion
    champion = tmp_path / "build" / "kfp-local" / "store" / "models" / "tuned"
    assert (champion / "champion.json").is_file(), "promote wrote no champion pointer"
    assert m["n"] > 0 and m["rmse_km"] >= m["mae_km"] > 0
    for stage in ("ingest", "pretrain", "finetune", "evaluate", "total"):
        assert m[f"{stage}_seconds"] > 0, stage
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "gate PASSED" in html
    assert "synthetic campaign" in (run_dir / "model_card.md").read_text()
    header = (run_dir / "predictions.csv").read_text().splitlines()[0]
    assert header == "time_utc,cbh_true_km,cbh_pred_km,member_42_km,member_43_km,baseline_km"
    assert m["ensemble_size"] == 2 and [x["seed"] for x in m["members"]] == [42, 43]
    # (a one-epoch model: no claim on where its R² sits in the interval, only that it has one)
    assert m["r2_lo"] < m["r2_hi"] and "baseline_r2" in m
    manifest = json.loads((run_dir / "model" / "ensemble.json").read_text())
    assert [x["file"] for x in manifest["members"]] == ["member-0.pt", "member-1.pt"]
    from cloudml.ensemble import load_ensemble

    assert load_ensemble(run_dir / "model").seeds == [42, 43]
    assert "gate PASSED on validation flight 12Feb25" in out
    # the screen (not a terminal here): a line per stage and the ending, the rest in the log
    lines = out.splitlines()
    assert len(lines) <= 45, out
    assert [ln.split()[1].rstrip(",") for ln in lines if ln.startswith("✓ ")] == [
        "ingest", "pretrain", "finetune", "pretrain", "finetune", "evaluate", "gate", "promote",
    ], out  # fmt: skip
    for label, path in (("report", run_dir / "report.html"), ("model card", run_dir /
                        "model_card.md"), ("log", run_dir / "pipeline.log")):  # fmt: skip
        assert re.search(rf"^  {label} +{re.escape(str(path))}\b", out, re.M), (label, out)
    assert "Got executor_input" not in out and "outputs:" not in out and "Warning" not in out
    assert m["promotion"] in out and "first champion of tuned" in m["promotion"]
    log = (run_dir / "pipeline.log").read_text()
    assert "Got executor_input" in log and "Task 'evaluate' outputs:" in log
    assert "have no effect in the current local runner" in log  # the runner's warnings too
    # one log line per epoch (1 epoch x 2 stages x 2 members), none of the progress events
    assert len(re.findall(r"(pretrain|finetune) epoch 1 \(at most 1\)", log)) == 4
    assert "@cloudml-progress" not in log

    # The same run again with --cache and a gate it cannot pass: every task whose inputs,
    # config and code are unchanged comes from kfp.local's cache (training included: the
    # threshold is no input of pretrain/finetune); evaluate (it takes the run id), the gate
    # and promote run again.
    first = m
    import builtins

    real_print = builtins.print
    rc, run_dir, out = _run(tmp_path, raw_dir, "--threshold", "0.99", "--cache")
    assert rc == 1
    assert builtins.print is real_print  # KFP's failed-task path leaves print indented
    log = (run_dir / "pipeline.log").read_text()
    for task in ("ingest", "pretrain", "finetune"):
        assert re.search(rf"Task '?{task}'? cache hit", log), task
    assert not re.search(r"Task '?evaluate'? cache hit", log)
    assert not re.search(r"(pretrain|finetune) epoch 1 \(at most 1\)", log)  # nothing trained
    stage_lines = [ln for ln in out.splitlines() if ln.startswith("✓ ")]
    assert any(ln.split()[1].rstrip(",") == "pretrain" and "cached" in ln for ln in stage_lines)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["r2"] == first["r2"] and m["members"] == first["members"]  # the same models
    assert m["gate_passed"] is False and m["threshold"] == 0.99
    assert m["promoted"] is False  # promote never runs after a failed gate
    assert f"R² = {m['r2']:.4f} [95% {m['r2_lo']:.4f}, {m['r2_hi']:.4f}] (threshold 0.9900)" in out
    assert "gate FAILED on validation flight 12Feb25" in out
    assert re.search(r"^✗ gate .*FAILED", out, re.M) and "promote" not in out.split("stages")[0]
    assert "promotion: not attempted" in out
    assert "gate FAILED" in (run_dir / "report.html").read_text()


def test_raw_fingerprint_changes_with_raw_files_only(tmp_path):
    from cloudml.errors import DataError
    from cloudml.steps import raw_fingerprint

    d = tmp_path / "raw" / "12Feb25"
    d.mkdir(parents=True)
    (d / "a.h5").write_bytes(b"one")
    (d / "b.hdf").write_bytes(b"two")
    first = raw_fingerprint(str(tmp_path / "raw"), "12Feb25")
    assert raw_fingerprint(str(tmp_path / "raw"), "12Feb25") == first
    (d / "b.hdf").write_bytes(b"TWO")
    assert raw_fingerprint(str(tmp_path / "raw"), "12Feb25") != first
    with pytest.raises(DataError, match="30Oct24: raw flight directory is missing"):
        raw_fingerprint(str(tmp_path / "raw"), "30Oct24")


@pytest.mark.servers
def test_cluster_ingest_path_reads_raw_from_s3(s3_env, tmp_path):
    """The cluster's ingest input: raw_uri=s3://bucket/raw on a real S3 server (SeaweedFS).

    fingerprint = the stored manifest's sha256 (nothing downloaded) and changes when a raw
    file is re-uploaded changed; run_ingest fetches the flight and writes the shard."""
    import shutil

    from cloudml.steps import raw_fingerprint, resolve_config_json, run_ingest
    from cloudml.store.backends import open_store
    from cloudml.store.manifest import manifest_sha256, upload_dir

    local = tmp_path / "campaign"
    ensure_campaign(local, ("12Feb25",), "local")
    store = open_store("s3://t-pipeline-raw")
    store.ensure_bucket()
    upload_dir(store, local / "12Feb25", "raw/12Feb25")
    raw_uri = "s3://t-pipeline-raw/raw"
    fp = raw_fingerprint(raw_uri, "12Feb25")
    assert fp == manifest_sha256(store, "raw/12Feb25")

    cfg = load_config("tuned", {"scale": "local", "flights": ["30Oct24", "12Feb25"]})
    summary = run_ingest(
        raw_uri, "12Feb25", resolve_config_json("tuned", cfg.flat()), tmp_path / "shard", fp
    )
    assert (tmp_path / "shard" / "12Feb25.h5").is_file() and summary["n_samples"] > 0
    assert (
        json.loads((tmp_path / "shard" / "12Feb25.summary.json").read_text())["raw_fingerprint"]
        == fp
    )

    changed = tmp_path / "changed"
    shutil.copytree(local / "12Feb25", changed)
    nav = next(p for p in changed.iterdir() if p.name.startswith("CRS_"))
    nav.write_bytes(nav.read_bytes() + b"\0")
    upload_dir(store, changed, "raw/12Feb25")
    assert raw_fingerprint(raw_uri, "12Feb25") != fp


@pytest.mark.slow
@pytest.mark.servers
@pytest.mark.timeout(480)
def test_local_run_with_s3_store_and_pushgateway(
    tmp_path, raw_dir, monkeypatch, s3_env, pushgateway, prometheus
):
    """Issue 5 acceptance: the local pipeline with CLOUDML_STORE=s3:// on a real S3 server
    (SeaweedFS) and PUSHGATEWAY_URL on a real Pushgateway scraped by a real Prometheus:
    every object of the run verifies against its manifest, the champion pointer names a
    complete version, and PromQL returns the run's R² with the pipeline and stage labels."""
    from cloudml.store.backends import open_store
    from cloudml.store.manifest import download_dir, read_manifest
    from tests.support.servers import wait_for_query

    store = open_store("s3://t-e2e-run/cloudml")
    store.ensure_bucket()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOUDML_STORE", "s3://t-e2e-run/cloudml")
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway.url)
    # a one-epoch model: the gate's thresholds and the baseline criterion are switched off
    rc, run_dir, out = _run(tmp_path, raw_dir, "--threshold=-1e9", "--min-std-ratio=0",
                            "--no-baseline")  # fmt: skip
    assert rc == 0, out
    m = json.loads((run_dir / "metrics.json").read_text())
    prefix = f"runs/tuned/{run_dir.name}"
    assert m["store"] == f"s3://t-e2e-run/cloudml/{prefix}"

    manifest = read_manifest(store, prefix)
    local_files = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
    assert set(manifest["objects"]) == local_files
    assert RUN_FILES - {"model"} <= local_files and "model/ensemble.json" in local_files
    download_dir(store, prefix, tmp_path / "verified")  # sha256-checked on read
    assert (tmp_path / "verified" / "metrics.json").read_bytes() == (
        run_dir / "metrics.json"
    ).read_bytes()

    pointer = json.loads(store.get_bytes("models/tuned/champion.json"))
    read_manifest(store, pointer["model_prefix"])  # the champion names a complete version
    assert m["promoted"] is True

    result = wait_for_query(prometheus, 'cloudml_val_r2{pipeline="tuned",stage="evaluate"}')
    assert len(result) == 1 and result[0]["metric"]["job"] == "cloudml"
    assert float(result[0]["value"][1]) == pytest.approx(m["r2"], rel=1e-9)
    passed = wait_for_query(prometheus, 'cloudml_gate_passed{pipeline="tuned",stage="gate"}')
    assert float(passed[0]["value"][1]) == 1.0
