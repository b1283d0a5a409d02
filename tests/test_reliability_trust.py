"""Secrets and trust: checkpoints cannot execute code, do not load into another architecture,
are refused when tampered with; no credential value reaches logs, compiled YAML or artifacts."""

from __future__ import annotations

import ast
import json
import logging
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from cloudml.cli import main
from cloudml.config import ModelConfig, load_config
from cloudml.errors import DataError, StorageError
from cloudml.model import CBHNet
from cloudml.steps import run_ingest
from cloudml.store.backends import S3Store, open_store
from cloudml.store.manifest import download_dir, upload_dir
from cloudml.store.resume import restore_stage_state, save_stage_state, state_prefix
from cloudml.training.checkpoint import (
    checkpoint_sha256,
    load_checkpoint,
    save_checkpoint,
    verify_stage_checkpoint,
)
from tests.support.rawfiles import flight_arrays, write_flight
from tests.support.servers import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.train_fixtures import FAST, write_shards

ROOT = Path(__file__).resolve().parents[1]

# spelled in two parts so repository greps for unsafe loads do not match this test itself
UNSAFE_LOAD = "weights_only=" + "False"


def _torch_load_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if f.attr == "load" and isinstance(f.value, ast.Name) and f.value.id == "torch":
                yield node


def test_every_torch_load_in_cloudml_uses_weights_only():
    calls = []
    for path in sorted((ROOT / "cloudml").rglob("*.py")):
        for call in _torch_load_calls(ast.parse(path.read_text(), str(path))):
            kw = {k.arg: k.value for k in call.keywords}
            ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value
            calls.append((f"{path.relative_to(ROOT)}:{call.lineno}", ok))
    assert calls, "expected at least the checkpoint loader"
    assert [where for where, ok in calls if not ok] == []
    # and nothing reaches the unpickler another way
    text = "\n".join(p.read_text() for p in (ROOT / "cloudml").rglob("*.py"))
    assert "pickle.load" not in text and UNSAFE_LOAD not in text


class _Evil:
    """Unpickling this would create a marker file (stands for arbitrary code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _checkpoint(model_cfg: ModelConfig, t: int = 3) -> dict:
    return {"model": CBHNet(model_cfg, t).state_dict(), "model_config": asdict(model_cfg),
            "temporal_frames": t, "scalers": {}, "stage": "pretrain"}  # fmt: skip


def test_pickle_bearing_checkpoint_is_refused_without_running_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({**_checkpoint(ModelConfig(memory_optimized=True)), "x": _Evil(str(marker))}, evil)
    with pytest.raises(DataError, match="not a readable checkpoint"):
        load_checkpoint(evil)
    shard = write_shards(tmp_path, ["12Feb25"], n=20)["12Feb25"]
    rc = main(["evaluate", "--shard", str(shard), "--checkpoint", str(evil),
               "--out", str(tmp_path / "eval")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and str(evil) in err and "not a readable checkpoint" in err, err
    assert not marker.exists()
    assert not (tmp_path / "eval").exists() or list((tmp_path / "eval").iterdir()) == []


def test_checkpoint_of_another_architecture_is_refused_naming_keys(tmp_path, capsys):
    shards = write_shards(tmp_path, ["30Oct24", "04Nov24"], n=24)
    pre = tmp_path / "pre" / "model.pt"
    save_checkpoint(pre, _checkpoint(ModelConfig(memory_optimized=True)))  # 32/64/128 channels
    out = tmp_path / "ft"
    argv = ["finetune", "--pretrained", str(pre), "--out", str(out)]
    for p in shards.values():
        argv += ["--shard", str(p)]
    for k, v in {**FAST, "memory_optimized": False}.items():  # 64/128/256 channels
        argv += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1 and str(pre) in err and "weights do not fit this architecture" in err, err
    assert "encoder.blocks.0.conv.weight (32, 1, 3, 3) vs (64, 1, 3, 3)" in err, err
    assert not out.exists() or list(out.iterdir()) == []


def test_tampered_checkpoint_in_the_store_is_refused(tmp_path):
    """A checkpoint travelling through the store (run outputs, stage state) is sha256-checked."""
    store = open_store(str(tmp_path / "store"))
    run = tmp_path / "run"
    save_checkpoint(run / "model.pt", _checkpoint(ModelConfig(memory_optimized=True)))
    upload_dir(store, run, "runs/tuned/r1/model")
    key = "runs/tuned/r1/model/model.pt"
    blob = bytearray(store.get_bytes(key))
    blob[-100] ^= 0xFF  # one flipped byte: still a zip the loader might accept
    store.put_bytes(key, bytes(blob))
    with pytest.raises(
        StorageError, match=f"checksum mismatch for {re.escape(store.describe(key))}"
    ):
        download_dir(store, "runs/tuned/r1/model", tmp_path / "back")
    assert not (tmp_path / "back").exists()

    (run / "last.pt").write_bytes((run / "model.pt").read_bytes())
    (run / "history.json").write_text('[{"epoch": 1}]')
    prefix = state_prefix("tuned", "r1", "pretrain")
    doc = save_stage_state(store, prefix, run)
    skey = f"{prefix}/{doc['objects']['last.pt']['key']}"
    store.put_bytes(skey, bytes(blob))
    with pytest.raises(StorageError, match="refusing a tampered or corrupted checkpoint"):
        restore_stage_state(store, prefix, tmp_path / "pod2")
    assert not (tmp_path / "pod2" / "last.pt").exists()


# --- credentials ----------------------------------------------------------------------------
@pytest.mark.servers
def test_secret_never_reaches_logs_yaml_or_artifacts(
    s3_server, tmp_path, monkeypatch, caplog, capsys
):
    """MINIO_SECRET_KEY holds a marker; compile, ingest from S3, sync stage state, upload run
    outputs and hit a refused credential, all at DEBUG; then grep everything they produced."""
    marker = S3_SECRET_KEY  # the server's real secret is itself a marker string
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    caplog.set_level(logging.DEBUG)
    S3Store(s3_server.endpoint, "t-reliability", access_key=S3_ACCESS_KEY,
            secret_key=S3_SECRET_KEY).ensure_bucket()  # fmt: skip

    yaml_path = tmp_path / "build" / "tuned.yaml"
    assert main(["-v", "compile", "--pipeline", "tuned", "--out", str(yaml_path)]) == 0
    write_flight(tmp_path / "raw", "30Oct24", flight_arrays(n_frames=20))
    assert main(["-v", "upload", "--src", str(tmp_path / "raw"), "--dest", "s3://t-reliability/trust/raw",
                 "--per-dir"]) == 0  # fmt: skip
    cfg = load_config("tuned", {"temporal_frames": 3}).to_json()
    art = tmp_path / "artifacts"
    run_ingest("s3://t-reliability/trust/raw", "30Oct24", cfg, art / "ingest")
    stage = art / "pretrain"
    save_checkpoint(stage / "last.pt", _checkpoint(ModelConfig(memory_optimized=True)))
    (stage / "history.json").write_text('[{"epoch": 1}]')
    store = open_store("s3://t-reliability/trust")
    save_stage_state(store, state_prefix("tuned", "r1", "pretrain"), stage)
    upload_dir(store, art, "runs/tuned/r1/outputs")
    monkeypatch.setenv("MINIO_SECRET_KEY", marker + "-wrong")
    assert main(["-v", "upload", "--src", str(art), "--dest", "s3://t-reliability/trust/x"]) == 1
    monkeypatch.setenv("MINIO_SECRET_KEY", marker)

    out = capsys.readouterr()
    logs = caplog.text + out.out + out.err
    logs += "".join(json.dumps(r.args, default=str) for r in caplog.records)
    assert "credentials refused" in logs  # the failing call was made and reported
    assert marker not in logs
    assert marker not in yaml_path.read_text()
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert marker.encode() not in p.read_bytes(), p
    keys = store.list("")
    assert any(k.endswith("state.json") for k in keys) and any("ingest" in k for k in keys)
    for key in keys:
        assert marker.encode() not in store.get_bytes(key), key


def test_checkpoint_changed_after_its_stage_is_refused(tmp_path, caplog):
    stage = tmp_path / "pretrain"
    save_checkpoint(stage / "model.pt", _checkpoint(ModelConfig(memory_optimized=True)))
    (stage / "summary.json").write_text(json.dumps({"model_sha256": checkpoint_sha256(stage)}))
    assert verify_stage_checkpoint(stage) == stage / "model.pt"
    blob = bytearray((stage / "model.pt").read_bytes())
    blob[-100] ^= 0xFF
    (stage / "model.pt").write_bytes(bytes(blob))
    with pytest.raises(DataError) as e:
        verify_stage_checkpoint(stage)
    assert str(stage / "model.pt") in str(e.value) and "does not match model_sha256" in str(e.value)
    (stage / "summary.json").write_text("{}")  # written before hashes existed: warn only
    assert verify_stage_checkpoint(stage) == stage / "model.pt"
    assert "not verified" in caplog.text
    with pytest.raises(DataError, match="checkpoint missing"):
        verify_stage_checkpoint(tmp_path / "nothing")


def test_pipeline_refuses_a_checkpoint_changed_between_stages(tmp_path, monkeypatch):
    """pretrain's summary.json records model_sha256; finetune and evaluate check it."""
    from cloudml.steps import run_evaluate, run_finetune, run_pretrain

    monkeypatch.delenv("CLOUDML_STORE", raising=False)
    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core box: spinning OpenMP threads slow steps ~50x
    try:
        shard_dir = tmp_path / "shards"
        write_shards(shard_dir, ["30Oct24", "04Nov24", "12Feb25"], n=24)
        cfg = load_config("tuned", {**FAST, "epochs": 1}).to_json()
        pre = tmp_path / "pretrain"
        summary = run_pretrain([str(shard_dir)], cfg, pre)
        assert summary["model_sha256"] == checkpoint_sha256(pre)
        blob = bytearray((pre / "model.pt").read_bytes())
        blob[-100] ^= 0xFF
        (pre / "model.pt").write_bytes(bytes(blob))
        with pytest.raises(DataError, match="does not match model_sha256"):
            run_finetune([str(shard_dir)], cfg, pre, tmp_path / "finetune")
        assert not (tmp_path / "finetune").exists() or not any((tmp_path / "finetune").iterdir())
        with pytest.raises(DataError, match="does not match model_sha256"):
            run_evaluate([str(shard_dir)], cfg, [pre], tmp_path / "eval", 0.3, 0.0)
    finally:
        torch.set_num_threads(threads)
