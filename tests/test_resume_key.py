"""The training tasks' stage-state key: the same for an unchanged re-run (so it can replace
the run id, which defeated KFP's cache), different when code, config, data or the
pretrained checkpoint change (so no stage resumes from another result's epochs)."""

from __future__ import annotations

import json

import pytest

from cloudml.config import load_config, replace
from cloudml.steps import common
from cloudml.steps.common import training_state_key
from cloudml.store.resume import result_key, state_prefix


def _shard_dir(root, flight, raw):
    d = root / flight
    d.mkdir(parents=True)
    (d / f"{flight}.h5").write_bytes(b"shard " + flight.encode())
    (d / f"{flight}.summary.json").write_text(json.dumps({"raw_sha256": raw, "seconds": 1.0}))
    return str(d)


@pytest.fixture
def shards(tmp_path):
    return [_shard_dir(tmp_path / "a", "30Oct24", {"IRAI": "aa"}),
            _shard_dir(tmp_path / "a", "12Feb25", {"IRAI": "bb"})]  # fmt: skip


def test_same_inputs_same_key_and_every_determinant_changes_it(tmp_path, shards, monkeypatch):
    cfg = load_config("tuned").to_json()
    key = training_state_key(cfg, shards)
    assert key == training_state_key(cfg, list(reversed(shards)))  # a re-run, any order
    assert key.startswith("k") and len(key) == 25
    # the same data ingested again (new artifact folders, new timings) keeps the key
    again = [_shard_dir(tmp_path / "b", "30Oct24", {"IRAI": "aa"}),
             _shard_dir(tmp_path / "b", "12Feb25", {"IRAI": "bb"})]  # fmt: skip
    (tmp_path / "b" / "30Oct24" / "30Oct24.summary.json").write_text(
        json.dumps({"raw_sha256": {"IRAI": "aa"}, "seconds": 9.0})
    )
    assert training_state_key(cfg, again) == key
    other_seed = replace(load_config("tuned"), seed=43).to_json()
    assert training_state_key(other_seed, shards) != key  # each member has its own state
    changed = [_shard_dir(tmp_path / "c", "30Oct24", {"IRAI": "a2"}), shards[1]]
    assert training_state_key(cfg, changed) != key  # new raw data
    monkeypatch.setattr(common, "code_fingerprint", lambda: "other code")
    assert training_state_key(cfg, shards) != key  # new code never resumes old epochs


def test_finetune_key_follows_the_pretrained_checkpoint(tmp_path, shards):
    cfg = load_config("tuned").to_json()
    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "summary.json").write_text(json.dumps({"model_sha256": "1" * 64}))
    k1 = training_state_key(cfg, shards, pre)
    assert k1 != training_state_key(cfg, shards)
    (pre / "summary.json").write_text(json.dumps({"model_sha256": "2" * 64}))
    assert training_state_key(cfg, shards, pre) != k1


def test_result_key_is_canonical_and_a_valid_state_prefix():
    assert result_key({"a": 1, "b": [1, 2]}) == result_key({"b": [1, 2], "a": 1})
    assert result_key({"a": 1}) != result_key({"a": 2})
    key = result_key({"a": 1})
    assert (
        state_prefix("tuned", key, "pretrain-seed42") == f"runs/tuned/{key}/pretrain-seed42/state"
    )
