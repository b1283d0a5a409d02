"""The sweep and leave-one-flight-out pipelines: compiled specs (placement, parallelism, the
ranking's inputs traced through the DAG) and their pure logic (variants, folds, ranking,
tables). End-to-end runs on the local runner: tests/test_sweep_local.py."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import yaml

from cloudml.cluster import settings as platform
from cloudml.config import load_config
from cloudml.errors import ConfigError, DataError
from cloudml.experiments import ranking, split_label, tables
from cloudml.experiments.folds import fold_configs, fold_overrides, training_fold_configs
from cloudml.experiments.variants import default_variants, parse_variants, variant_configs
from pipelines.training import compile_pipeline

TRAINING_AND_EVALUATION = ("pretrain", "finetune", "evaluate")


@pytest.fixture(scope="module", params=["sweep", "lofo", "sweep-lofo"])
def compiled(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / f"{request.param}.yaml"
    compile_pipeline(request.param, out)
    spec, plat = yaml.safe_load_all(out.read_text())
    return request.param, spec, plat


def _all_tasks(spec: dict) -> list[tuple[str, dict]]:
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    return [(name, t) for dag in dags for name, t in dag["tasks"].items()]


def _base_name(executor: str) -> str:
    """exec-evaluate-2 -> evaluate: kfp numbers the executors of a component used twice
    (sweep-lofo calls the train-evaluate chain for the variant and for each fold)."""
    return re.sub(r"-\d+$", "", executor.removeprefix("exec-"))


def test_every_training_and_evaluation_task_is_on_the_gpu_pool(compiled):
    _, spec, plat = compiled
    executors = spec["deploymentSpec"]["executors"]
    kube = plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    pool = platform.gpu_pool()
    used = {
        _base_name(t["componentRef"]["name"].replace("comp-", "exec-")) for _, t in _all_tasks(spec)
    }
    for name in TRAINING_AND_EVALUATION:
        assert name in used, name
        for ex in [e for e in executors if _base_name(e) == name]:
            res = executors[ex]["container"]["resources"]
            assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert res["accelerator"]["resourceCount"] == "1"
            assert kube[ex]["nodeSelector"]["labels"] == {pool.label_key: pool.label_value}
            assert kube[ex]["tolerations"] == [{
                "key": pool.taint_key, "operator": "Equal", "value": pool.taint_value,
                "effect": pool.taint_effect,
            }]  # fmt: skip
    # nothing else takes a GPU
    gpu = {n for n, e in executors.items() if "accelerator" in e["container"].get("resources", {})}
    assert {_base_name(n) for n in gpu} == set(TRAINING_AND_EVALUATION)
    for name in ("pretrain", "finetune"):  # retried as in the training pipeline (resume)
        tasks = [t for n, t in _all_tasks(spec) if _base_name(n) == name]
        assert tasks and all(t["retryPolicy"]["maxRetryCount"] >= 1 for t in tasks)


def test_parallelism_limit_is_in_the_spec(compiled, monkeypatch, tmp_path):
    kind, spec, _ = compiled
    root = spec["root"]["dag"]["tasks"]
    (loop,) = [t for k, t in root.items() if k.startswith("for-loop")]
    name, items = {"sweep": ("train-each-variant", "sweep"), "lofo": ("train-each-fold", "lofo"),
                   "sweep-lofo": ("train-each-variant", "sweep")}[kind]  # fmt: skip
    assert loop["taskInfo"]["name"] == name
    assert loop["iteratorPolicy"]["parallelismLimit"] == platform.gpu_parallelism()
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith(f"{items}-configs-Output")
    if kind == "sweep-lofo":  # each variant's folds: the same limit, over its training flights
        folds = spec["components"]["comp-lofo-training-flights"]["dag"]["tasks"]
        (fl,) = [t for k, t in folds.items() if k.startswith("for-loop")]
        assert fl["taskInfo"]["name"] == "train-each-fold"
        assert fl["iteratorPolicy"]["parallelismLimit"] == platform.gpu_parallelism()
        assert fl["parameterIterator"]["items"]["inputParameter"].endswith(
            "training-fold-configs-Output"
        )
    # each model trains its members one at a time: the limit is the number of GPUs taken
    members = spec["components"]["comp-train-members"]["dag"]["tasks"]
    (inner,) = [t for k, t in members.items() if k.startswith("for-loop")]
    assert inner["iteratorPolicy"]["parallelismLimit"] == 1
    monkeypatch.setenv("CLOUDML_GPU_PARALLELISM", "7")
    compile_pipeline(kind, tmp_path / "p.yaml")
    other, _ = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    (loop,) = [t for k, t in other["root"]["dag"]["tasks"].items() if k.startswith("for-loop")]
    assert loop["iteratorPolicy"]["parallelismLimit"] == 7


def upstream(spec: dict, comp: str, task: str, ctx: tuple = ()) -> set[str]:
    """Every component whose output data can reach `task` of component `comp`: its inputs
    followed through sub-DAG outputs (down) and component inputs (up to the calling task,
    `ctx` = the (component, task) calls above)."""
    return {ref for ref, _ in reached(spec, comp, task, ctx)}


def reached(spec: dict, comp: str, task: str, ctx: tuple = ()) -> set[tuple[str, tuple]]:
    """upstream's components, each with the sub-pipeline calls it was reached inside (the
    componentRef names of the calling tasks, outermost first)."""
    seen: set[tuple[str, tuple]] = set()

    def dag(c: str) -> dict:
        return spec["root"]["dag"] if c == "root" else spec["components"][c]["dag"]

    def visit_inputs(c: str, t: str, ctx: tuple) -> None:
        node = dag(c)["tasks"][t]
        for kind in ("parameters", "artifacts"):
            for src in node.get("inputs", {}).get(kind, {}).values():
                visit_source(c, src, ctx)
        # dependentTasks only order tasks (they also list every data producer): not followed

    def visit_source(c: str, src: dict, ctx: tuple) -> None:
        out = src.get("taskOutputParameter") or src.get("taskOutputArtifact")
        if out:
            key = out.get("outputParameterKey") or out.get("outputArtifactKey")
            visit_output(c, out["producerTask"], key, ctx)
        name = src.get("componentInputParameter") or src.get("componentInputArtifact")
        if name and ctx:
            parent, call = ctx[-1]
            node = dag(parent)["tasks"][call]
            for kind in ("parameters", "artifacts"):
                if name in node.get("inputs", {}).get(kind, {}):
                    visit_source(parent, node["inputs"][kind][name], ctx[:-1])

    def visit_output(c: str, t: str, key: str | None, ctx: tuple) -> None:
        ref = dag(c)["tasks"][t]["componentRef"]["name"]
        if (ref, t, key, ctx) in visited:
            return
        visited.add((ref, t, key, ctx))
        seen.add((ref, tuple(dag(pc)["tasks"][pt]["componentRef"]["name"] for pc, pt in ctx)))
        visit_inputs(c, t, ctx)
        sub = spec["components"][ref].get("dag")
        if sub is None:
            return
        inner = ctx + ((c, t),)
        outs = sub.get("outputs", {})
        selectors = []
        for kind in ("parameters", "artifacts"):
            for k, v in outs.get(kind, {}).items():
                if key is None or k == key:
                    selectors += [v["valueFromParameter"]] if "valueFromParameter" in v else []
                    selectors += v.get("artifactSelectors", [])
        for sel in selectors:
            k = sel.get("outputParameterKey") or sel.get("outputArtifactKey")
            visit_output(ref, sel["producerSubtask"], k, inner)

    visited: set = set()
    visit_inputs(comp, task, ctx)
    return seen


def test_ranking_never_sees_a_validation_flight_metric():
    """Traced through the compiled DAG: rank-variants' only input is the selection scores,
    and no evaluate task (the only one that reads the validation flight's predictions) is
    upstream of it; the counter-check finds evaluate upstream of the comparison table."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        spec, _ = yaml.safe_load_all(compile_pipeline("sweep", Path(d) / "s.yaml").read_text())
    rank = spec["root"]["dag"]["tasks"]["rank-variants"]
    assert set(rank["inputs"].get("parameters", {})) == {"scores", "ranked_on"}
    assert rank["inputs"]["parameters"]["ranked_on"]["runtimeValue"]["constant"] == "selection"
    assert not rank["inputs"].get("artifacts")
    found = upstream(spec, "root", "rank-variants")
    assert "comp-selection-score" in found and "comp-finetune" in found
    assert "comp-evaluate" not in found, sorted(found)
    assert "comp-evaluate" in upstream(spec, "root", "compare-variants")
    # the winner goes through gate and promotion
    gate_up = upstream(spec, "root", "gate")
    assert {"comp-rank-variants", "comp-pick-winner", "comp-evaluate"} <= gate_up
    assert "gate" in spec["root"]["dag"]["tasks"]["promote"]["dependentTasks"]


def test_lofo_ranking_sees_only_folds_of_the_training_flights(tmp_path):
    """sweep-lofo, traced through the compiled DAG: rank-variants' only input is the
    lofo-score outputs; every evaluate upstream of it runs inside the lofo-training-flights
    sub-pipeline (a fold scored on
    a held-out training flight), none is a variant's own (validation-flight) evaluate, and
    the folds' configs come from training-fold-configs (which drops the validation flight:
    test_training_folds_never_contain_the_validation_flight)."""
    spec, _ = yaml.safe_load_all(compile_pipeline("sweep-lofo", tmp_path / "s.yaml").read_text())
    assert spec["pipelineInfo"]["name"] == "cloudml-sweep-lofo"
    rank = spec["root"]["dag"]["tasks"]["rank-variants"]
    assert set(rank["inputs"]["parameters"]) == {"scores", "ranked_on"}
    assert rank["inputs"]["parameters"]["ranked_on"]["runtimeValue"]["constant"] == "lofo"
    sub = "comp-lofo-training-flights"
    found = {(_base_name(ref), calls) for ref, calls in reached(spec, "root", "rank-variants")}
    evaluates = [calls for ref, calls in found if ref == "comp-evaluate"]
    assert evaluates, sorted(found)
    assert all(sub in calls for calls in evaluates), evaluates  # only the folds' evaluate
    refs = {ref for ref, _ in found}
    assert {"comp-training-fold-configs", "comp-lofo-score", sub} <= refs
    assert "comp-selection-score" not in refs  # ranked on the folds alone
    # the comparison table shows both scores and the variant's own validation evaluate
    cmp_found = {(_base_name(r), c) for r, c in reached(spec, "root", "compare-variants")}
    assert any(r == "comp-evaluate" and sub not in c for r, c in cmp_found)
    assert "comp-selection-score" in {r for r, _ in cmp_found}


def test_lofo_reports_every_fold_and_is_not_gated_by_default(tmp_path):
    spec, _ = yaml.safe_load_all(compile_pipeline("lofo", tmp_path / "l.yaml").read_text())
    root = spec["root"]["dag"]["tasks"]
    assert "gate" not in root and "promote" not in root
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["gate_mean"]["defaultValue"] is False
    assert "comp-evaluate" in upstream(spec, "root", "lofo-report")


def test_sweep_parameters_default_to_tuned_and_the_six_variants(tmp_path):
    spec, _ = yaml.safe_load_all(compile_pipeline("sweep", tmp_path / "s.yaml").read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert spec["pipelineInfo"]["name"] == "cloudml-sweep"
    assert params["learning_rate"]["defaultValue"] == load_config("tuned").train.learning_rate
    names = [v["name"] for v in params["variants"]["defaultValue"]]
    assert names == ["tuned", "memory_optimized", "temporal_frames_4", "pure_mae",
                     "no_temporal_attention", "weight_decay_0.08"]  # fmt: skip
    assert params["variants"]["description"].strip()


# --- pure logic ----------------------------------------------------------------------------
def test_default_variants_are_the_seeds_alternatives():
    cfgs = [json.loads(c) for c in variant_configs(load_config("tuned").to_json(),
                                                   default_variants())]  # fmt: skip
    by = {split_label(c["preset"])[1]: c for c in cfgs}
    tuned = load_config("tuned").flat()
    changed = {name: {k for k, v in c.items() if k != "preset" and v != tuned[k]}
               for name, c in by.items()}  # fmt: skip
    assert changed == {
        "tuned": set(), "memory_optimized": {"memory_optimized"},
        "temporal_frames_4": {"temporal_frames"}, "pure_mae": {"loss_type", "loss_alpha"},
        "no_temporal_attention": {"use_temporal_attention"}, "weight_decay_0.08": {"weight_decay"},
    }  # fmt: skip
    assert by["pure_mae"]["loss_alpha"] == 0.0 and by["weight_decay_0.08"]["weight_decay"] == 0.08


def test_variants_are_checked_naming_the_variant_and_key():
    base = load_config("tuned").to_json()
    with pytest.raises(ConfigError, match="(?s)variant fast: .*epochs: must be >= 1"):
        variant_configs(base, [{"name": "fast", "overrides": {"epochs": 0}}])
    with pytest.raises(ConfigError, match="(?s)variant x: .*unknown key 'lr'"):
        variant_configs(base, [{"name": "x", "overrides": {"lr": 1}}])
    with pytest.raises(ConfigError, match="variant v: validation_flight cannot differ"):
        parse_variants([{"name": "v", "overrides": {"validation_flight": "30Oct24"}}], "f.yaml")
    with pytest.raises(ConfigError, match="f.yaml: .*name used twice"):
        parse_variants([{"name": "a"}, {"name": "a"}], "f.yaml")
    with pytest.raises(ConfigError, match="f.yaml: expected a non-empty list"):
        parse_variants({"name": "a"}, "f.yaml")


def test_folds_hold_out_each_flight_and_move_pretraining_off_it():
    flights = ("30Oct24", "12Feb25", "18Feb25")
    folds = fold_overrides(flights, "30Oct24", "30Oct24")
    assert folds["12Feb25"] == {"validation_flight": "12Feb25", "pretrain_flight": "30Oct24",
                                "overweight_flight": "30Oct24"}  # fmt: skip
    assert folds["30Oct24"]["pretrain_flight"] == "12Feb25"  # the next flight, not the scored
    assert folds["30Oct24"]["overweight_flight"] == "12Feb25"
    cfg = load_config("tuned", {"flights": list(flights)})
    labels = [json.loads(c)["preset"] for c in fold_configs(cfg.to_json())]
    assert labels == ["lofo.30Oct24", "lofo.12Feb25", "lofo.18Feb25"]
    with pytest.raises(ConfigError, match="at least two"):
        fold_overrides(("30Oct24",), "30Oct24", "30Oct24")


def test_training_folds_never_contain_the_validation_flight():
    flights = ["30Oct24", "04Nov24", "18Feb25", "12Feb25"]
    cfg = load_config("tuned", {"flights": flights, "validation_flight": "12Feb25"})
    (base,) = variant_configs(cfg.to_json(), [{"name": "a", "overrides": {}}])
    folds = [json.loads(c) for c in training_fold_configs(base)]
    assert [f["preset"] for f in folds] == ["sweep.a.lofo.30Oct24", "sweep.a.lofo.04Nov24",
                                            "sweep.a.lofo.18Feb25"]  # fmt: skip
    for f in folds:
        assert f["flights"] == ["30Oct24", "04Nov24", "18Feb25"]  # no validation flight
        assert f["validation_flight"] != "12Feb25"
        assert f["pretrain_flight"] != f["validation_flight"]
    assert folds[0]["pretrain_flight"] == "04Nov24"  # 30Oct24 held out: pretrain the next
    assert split_label(folds[1]["preset"]) == ("sweep", "a.lofo.04Nov24")
    two = load_config("tuned", {"flights": ["30Oct24", "12Feb25"]}).to_json()
    with pytest.raises(ConfigError, match="at least two training flights besides"):
        training_fold_configs(two)


def test_lofo_score_ranks_on_the_folds_mean():
    a = ranking.lofo_score("sweep.a", [{"held_out": "x", "r2": 0.1}, {"held_out": "y", "r2": 0.5}])
    assert a == {"label": "sweep.a", "lofo_r2": pytest.approx(0.3), "lofo_r2_min": 0.1,
                 "lofo_r2_max": 0.5, "folds": {"x": 0.1, "y": 0.5}}  # fmt: skip
    b = {**a, "label": "sweep.b", "lofo_r2": 0.4, "selection_r2": -1.0}
    a = {**a, "selection_r2": 0.9}
    assert ranking.rank([a, b], "lofo") == ["sweep.b", "sweep.a"]
    assert ranking.rank([a, b]) == ["sweep.a", "sweep.b"]
    with pytest.raises(DataError, match="on must be one of"):
        ranking.rank([a], "validation")
    with pytest.raises(DataError, match="no leave-one-flight-out folds"):
        ranking.lofo_score("sweep.c", [])


def test_selection_score_reads_the_kept_epoch_and_ranks_on_r2_only():
    hist = [{"epoch": 1, "selection_r2": 0.1, "selection_loss": 0.5},
            {"epoch": 2, "selection_r2": 0.3, "selection_loss": 0.4}]  # fmt: skip
    assert ranking.member_selection(hist, 2) == {"selection_r2": 0.3, "selection_loss": 0.4}
    with pytest.raises(DataError, match="best epoch 3"):
        ranking.member_selection(hist, 3)
    a = ranking.selection_score("sweep.a", [{"selection_r2": 0.2, "selection_loss": 9.0,
                                             "seconds": 5.0}] * 2)  # fmt: skip
    b = ranking.selection_score("sweep.b", [{"selection_r2": 0.4, "selection_loss": 0.1,
                                             "seconds": 1.0},
                                            {"selection_r2": 0.0, "selection_loss": 0.1,
                                             "seconds": 2.0}])  # fmt: skip
    assert (b["selection_r2"], b["selection_r2_min"], b["train_seconds"]) == (0.2, 0.0, 3.0)
    nan = {**a, "label": "sweep.n", "selection_r2": math.nan}
    c = {**a, "label": "sweep.c", "selection_r2": 0.25}
    # the loss (9.0 vs 0.1) plays no part; ties by label; NaN last
    assert ranking.rank([nan, b, a, c]) == ["sweep.c", "sweep.a", "sweep.b", "sweep.n"]


def test_sweep_rows_keep_the_ranking_and_label_the_validation_columns():
    scores = {"sweep.a": {"selection_r2": 0.5, "train_seconds": 3.0},
              "sweep.b": {"selection_r2": 0.2, "train_seconds": 4.0}}  # fmt: skip
    val = {"sweep.a": {"r2": 0.1, "r2_lo": 0.0, "r2_hi": 0.2, "n": 10},
           "sweep.b": {"r2": 0.9, "r2_lo": 0.8, "r2_hi": 0.95, "n": 10}}  # fmt: skip
    rows = tables.sweep_rows(["sweep.a", "sweep.b"], scores, val)
    # b has the better validation R², a the better selection R²: a wins, b is not promoted
    assert [(r["rank"], r["variant"], r["winner"]) for r in rows] == [(1, "a", True),
                                                                       (2, "b", False)]  # fmt: skip
    assert rows[1]["val_r2"] == 0.9 and math.isnan(rows[0]["val_mae_km"])
    page = tables.sweep_html(rows, "12Feb25", "tuned")
    assert "validation 12Feb25 R² [95%] (not used for ranking)" in page
    assert tables.to_csv(rows, tables.SWEEP_COLUMNS).splitlines()[0].split(",") == list(
        tables.SWEEP_COLUMNS
    )


def test_sweep_rows_ranked_on_lofo_say_so():
    scores = {"sweep.a": {"selection_r2": 0.5}, "sweep.b": {"selection_r2": 0.2}}
    lofo = {"sweep.a": {"lofo_r2": 0.1, "lofo_r2_min": 0.0, "lofo_r2_max": 0.2},
            "sweep.b": {"lofo_r2": 0.3, "lofo_r2_min": 0.2, "lofo_r2_max": 0.4}}  # fmt: skip
    rows = tables.sweep_rows(["sweep.b", "sweep.a"], scores, {}, lofo)
    assert [(r["variant"], r["lofo_r2"], r["ranked_on"]) for r in rows] == [
        ("b", 0.3, "lofo"), ("a", 0.1, "lofo")]  # fmt: skip
    page = tables.sweep_html(rows, "12Feb25", "tuned")
    assert "leave-one-training-flight-out R² (ranked on" in page
    assert "selection-split R² (members' mean, min-max)</th>" in page  # not "ranked on"
    assert tables.sweep_ui_metrics(rows)["b_lofo_r2"] == 0.3
    plain = tables.sweep_rows(["sweep.a"], scores, {})
    assert plain[0]["ranked_on"] == "selection" and math.isnan(plain[0]["lofo_r2"])
    assert "leave-one" not in tables.sweep_html(plain, "12Feb25", "tuned")


def test_lofo_summary_and_bias_interval():
    rows = [{"r2": 0.2, "mae_km": 0.3, "bias_km": 0.1}, {"r2": 0.4, "mae_km": 0.1, "bias_km": -0.1}]
    s = tables.lofo_summary(rows)
    assert s["mean_r2"] == pytest.approx(0.3) and s["std_r2"] == pytest.approx(0.1414, abs=1e-4)
    assert (s["min_mae_km"], s["max_mae_km"], s["folds"]) == (0.1, 0.3, 2.0)
    y = np.linspace(0.2, 1.8, 400)
    lo, hi = tables.bias_interval(y, y + 0.25)  # a constant bias: a degenerate interval
    assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)
    rng = np.random.default_rng(0)
    lo, hi = tables.bias_interval(y, y + 0.1 + rng.normal(0, 0.2, len(y)))
    assert lo < 0.1 < hi and hi - lo < 0.1
