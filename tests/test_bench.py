"""Benchmark helpers: statistics, FLOP counting, table rendering, and that the research-style
reread loader and the production loader deliver the same sample tensors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import loader_bench  # noqa: E402
import mfu  # noqa: E402
import research_side  # noqa: E402
import run as bench_run  # noqa: E402

from cloudml.config import load_config  # noqa: E402
from cloudml.data.ingest import ingest_flight  # noqa: E402
from cloudml.data.shard import read_shard  # noqa: E402
from cloudml.training.data import load_pool  # noqa: E402
from cloudml.training.loop import gather_batch  # noqa: E402
from tests.support.rawfiles import flight_arrays, write_flight  # noqa: E402


# --- statistics ------------------------------------------------------------------------------
def test_summarize_median_and_spread():
    s = common.summarize([3.0, 1.0, 10.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.5, 1.0, 10.0, 4)
    assert s["runs"] == [3.0, 1.0, 10.0, 2.0]
    assert common.summarize([7])["median"] == 7.0
    with pytest.raises(ValueError):
        common.summarize([])


def test_ratio_figure_pairs_runs_by_repeat():
    fig = common.ratio_figure([100.0, 80.0], [5.0, 2.0], "x", "cmd")
    assert fig["runs"] == [20.0, 40.0]
    assert (fig["median"], fig["min"], fig["max"]) == (30.0, 20.0, 40.0)
    with pytest.raises(ValueError):
        common.ratio_figure([1.0], [1.0, 2.0], "x", "cmd")


def test_extrapolate_rss_is_linear_in_batch():
    assert bench_run.extrapolate_rss(2, 3.0, 4, 5.0, 20) == pytest.approx(21.0)
    with pytest.raises(ValueError):
        bench_run.extrapolate_rss(2, 1.0, 2, 1.0, 20)


def test_machine_text_parsers():
    assert common.cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert common.cpu_model("") == "unknown"
    assert common.allocator_name({}) == "glibc malloc"
    env = common.jemalloc_env({"PATH": "/bin"})
    assert "jemalloc" in common.allocator_name(env)
    assert "LD_PRELOAD" not in common.glibc_env(env) and env["PATH"] == "/bin"


def test_last_json_line_and_stage_seconds():
    text = 'progress\n{"a": 1}\nnoise {\n{"b": 2}\ntrailing\n'
    assert bench_run.last_json_line(text) == {"b": 2}
    with pytest.raises(ValueError):
        bench_run.last_json_line("no json here")
    assert bench_run.stage_seconds({"seconds": {"ingest": 1, "total": 2.5}}) == {
        "ingest": 1.0,
        "total": 2.5,
    }
    with pytest.raises(ValueError):
        bench_run.stage_seconds({"r2": 0.4})
    with pytest.raises(SystemExit):
        bench_run.parse_only("ingest,gpu")
    assert bench_run.parse_only("train, loader") == ["train", "loader"]


# --- FLOPs -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [{}, {"memory_optimized": True}, {"use_spatial_attention": False},
     {"use_temporal_attention": False}],
)  # fmt: skip
def test_flop_counter_matches_analytic_count(overrides):
    cfg = load_config("tuned", overrides).model
    for frames, h, w in ((5, 27, 40), (3, 16, 24)):
        counted = mfu.counted_forward_flops(cfg, frames, h, w)
        assert counted == mfu.analytic_forward_flops(cfg, frames, h, w)
    assert mfu.train_flops_per_sample(counted) == 3 * counted


def test_conv_flops_and_mfu():
    # one 3x3 conv 1->64 over 10x10: 64*9 MACs per pixel, 2 FLOPs each
    assert mfu.conv2d_flops(1, 64, 3, 10, 10) == 2 * 64 * 9 * 100
    assert mfu.mfu(2.0, 50e9, 200e9) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        mfu.mfu(1.0, 1.0, 0.0)
    assert mfu.parse_size("full") == (440, 640) and mfu.parse_size("12x34") == (12, 34)
    with pytest.raises(ValueError):
        mfu.parse_size("big")


# --- rendering -------------------------------------------------------------------------------
def test_fmt_figure_and_not_measured():
    fig = common.figure([10.0, 12.5, 11.0], "s", "make test")
    assert common.fmt_figure(fig) == ("11", "10–12.5", "3")
    assert common.fmt_figure(common.figure([0.31], "fraction", "c"), 100.0) == (
        "31",
        "(1 run)",
        "1",
    )
    assert common.fmt_figure(None) == (common.NOT_MEASURED, "", "")
    table = common.markdown_table([["a|b", "1"]], ("k", "v"))
    assert table.splitlines() == ["| k | v |", "|---|---|", "| a\\|b | 1 |"]


def test_render_doc_fills_measured_and_marks_missing():
    loader = bench_run.loader_figures(
        {
            "production_samples_per_s": [400.0, 420.0, 380.0],
            "reread_samples_per_s": [8.0, 10.0, 9.5],
            "n_samples": 545, "frame_shape": [440, 640], "temporal_frames": 5, "batch": 20,
            "reread_batches": 3,
        },
        "bench/loader_bench.py --repeats 3",
    )  # fmt: skip
    results = {"machine": {"cpu_model": "Test CPU", "cores": 2}, "sections": {"loader": loader}}
    results.update(bench_run.headline(results))
    assert results["loader_speedup_vs_reread"]["runs"] == [50.0, 42.0, 40.0]
    assert results["make_test_wall_s"] is None and results["train_full_cpu_mfu"] is None
    doc = common.render_doc(results)
    speed_row = next(r for r in doc.splitlines() if r.startswith("| speedup"))
    assert "| 42 | 40–50 | 3 | >= 20x: met |" in speed_row
    make_test_row = next(r for r in doc.splitlines() if r.startswith("| make test"))
    assert common.NOT_MEASURED in make_test_row
    assert "not measured (no GPU lent)" in doc and "Test CPU" in doc

    results["sections"]["train"] = {"error": "RuntimeError: train_bench exited with -9"}
    doc = common.render_doc(results)
    assert "failed (RuntimeError: train_bench exited with -9)" in doc
    mfu_row = next(r for r in doc.splitlines() if r.startswith("| full jemalloc B=?: MFU"))
    assert common.NOT_MEASURED in mfu_row


def test_ingest_figures_from_ingest_bench_json():
    ing = {
        "source": "random",
        "full": {"runs_s": [20.0, 25.0, 10.0], "n_raw_frames": 700, "share": {"clahe": 0.7}},
    }
    res = bench_run.ingest_figures(ing, "bench/ingest_bench.py")
    assert res["flight_full_frames_per_s"]["runs"] == [35.0, 28.0, 70.0]
    assert res["flight_full_frames_per_s"]["median"] == 35.0
    assert "flight_local_s" not in res


# --- loaders ---------------------------------------------------------------------------------
def test_reread_loader_gives_production_tensors(tmp_path):
    """Same indices -> the same (T, H, W) tensors from the shard and from the raw file."""
    arrays = flight_arrays(n_frames=40, rows=64, cols=80, seed=3)
    arrays["signal"][:, :, :] += np.arange(80, dtype=np.uint16)[None, None, :]  # striping
    raw_dir = tmp_path / "raw"
    write_flight(raw_dir, "30Oct24", arrays)
    cfg = load_config("tuned", {"scale": "full"})
    shard_path = tmp_path / "30Oct24.h5"
    ingest_flight(raw_dir, "30Oct24", shard_path, cfg)
    shard = read_shard(shard_path)
    pool = load_pool({"30Oct24": shard_path}, ["30Oct24"], 5)
    ds = loader_bench.reread_dataset(raw_dir, "30Oct24", shard, cfg)

    assert len(ds) == len(pool) > 20
    # the time-derived raw windows are consecutive frames around the matched frame
    assert (np.diff(ds.windows, axis=1) == 1).all()
    idx = np.array([0, 7, len(pool) - 1])
    prod = gather_batch(pool, idx)  # (3, T, H, W)
    reread = torch.stack([ds[int(i)] for i in idx])
    assert prod.shape == reread.shape == (3, 5, *shard.frame_shape)
    assert torch.equal(reread, prod)  # bit for bit: same arithmetic in the same order
    # and it is not trivially equal: different samples differ
    assert not torch.equal(reread[0], reread[1])


def test_loader_batches_count_samples(tmp_path):
    arrays = flight_arrays(n_frames=30, rows=32, cols=40, seed=1)
    raw_dir = tmp_path / "raw"
    write_flight(raw_dir, "30Oct24", arrays)
    cfg = load_config("tuned", {"scale": "full"})
    ingest_flight(raw_dir, "30Oct24", tmp_path / "s.h5", cfg)
    pool = load_pool({"30Oct24": tmp_path / "s.h5"}, ["30Oct24"], 5)
    ds = loader_bench.reread_dataset(raw_dir, "30Oct24", read_shard(tmp_path / "s.h5"), cfg)
    sc = {"sza_mean": 45.0, "sza_std": 10.0, "cbh_mean": 1.0, "cbh_std": 0.5}
    n = len(pool)
    assert n >= 8
    expect = n - 1 if n % 4 == 1 else n  # a trailing batch of one is dropped (BatchNorm)
    assert loader_bench.production_batches(pool, sc, 4, None) == expect
    assert loader_bench.production_batches(pool, sc, 4, 2) == 8
    assert loader_bench.production_batches(pool, sc, 4, 2, with_augment=False) == 8
    assert loader_bench.reread_batches(ds, pool, sc, 4, 1) == 4


def test_newest_run_dir_picks_latest_finished_run(tmp_path):
    import json
    import os

    for i, name in enumerate(("tuned-20260101T000000Z", "tuned-20260102T000000Z")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"seconds": {"total": i}}))
        os.utime(tmp_path / name / "metrics.json", (1000 + i, 1000 + i))
    (tmp_path / "tuned-20260103T000000Z").mkdir()  # unfinished: no metrics.json
    (tmp_path / "baseline-20260104T000000Z").mkdir()
    (tmp_path / "baseline-20260104T000000Z" / "metrics.json").write_text("{}")
    assert bench_run.newest_run_dir(tmp_path, "tuned").name == "tuned-20260102T000000Z"
    assert bench_run.newest_run_dir(tmp_path, "tuned", after=5000) is None


def test_bench_train_plan_extrapolates_memory_and_shrinks_batch(monkeypatch):
    """Full-size batch 20 is only measured when the B=2/B=4 probes say it fits."""
    calls = []
    gib = 2**30

    def fake_child(size, batch, steps, warmup, env, tag):
        calls.append((size, batch, tag))
        rss = (1 + 2 * batch) * gib if size == "full" else gib // 2  # 2 GiB per sample
        return {"batch": batch, "step_s_median": batch / 4.0, "threads": 2,
                "peak_rss_bytes": rss, "command": f"train_bench {size} {batch}"}  # fmt: skip

    monkeypatch.setattr(bench_run, "train_child", fake_child)
    monkeypatch.setattr(bench_run, "step_anatomy", lambda *a: {"full_profile": {}})
    monkeypatch.setattr(mfu, "matmul_flops_per_s", lambda n, repeats: [1e12, 2e12, 3e12])
    monkeypatch.setattr(bench_run, "mem_available_bytes", lambda: 30 * gib)  # B=20 needs 41

    out = bench_run.bench_train(repeats=2, quick=False, full_batch=20, full_repeats=2)
    assert out["full_batch"] == 4
    assert [c[:2] for c in calls[:2]] == [("full", 2), ("full", 4)]  # probes first
    assert out["full_b20_rss_estimate_gib"] == pytest.approx(41.0)
    assert out["full_jemalloc_samples_per_s"]["runs"] == [4.0, 4.0]
    assert out["full_glibc_samples_per_s"]["n"] == 2  # full_repeats runs per allocator
    train_flops = out["flops"]["full"]["train"]
    assert out["full_jemalloc_mfu"]["median"] == pytest.approx(4.0 * train_flops / 2e12)
    assert out["local_jemalloc_samples_per_s"]["n"] == 2

    calls.clear()
    monkeypatch.setattr(bench_run, "mem_available_bytes", lambda: 100 * gib)
    out = bench_run.bench_train(repeats=1, quick=False, full_batch=20, full_repeats=1)
    assert out["full_batch"] == 20
    assert ("full", 20) in [c[:2] for c in calls]


def test_e2e_section_states_the_three_time_goals():
    import doc_sections

    fig = lambda v: common.figure([v], "s", "make run")  # noqa: E731
    e2e = {"make_run_tuned_wall_s": fig(905.0), "stages_s": {"pretrain": fig(230.0)},
           "make_run_tuned_single_wall_s": fig(250.0),
           "make_run_tuned_single_stages_s": fig(238.0), "make_test_wall_s": fig(600.0)}  # fmt: skip
    text = "\n".join(doc_sections.e2e_lines(e2e))
    assert "< 15 min: MISSED" in text  # 905 s with the default ensemble
    assert "<= 4 min: met" in text  # one member's stages
    assert text.count(": met") == 2  # and make test under 15 minutes
    assert doc_sections.goal(900.0, "<", 900, "x") == "x: MISSED"
    with pytest.raises(ValueError, match="op must be one of"):
        doc_sections.goal(1.0, ">", 0, "x")


# --- the research code beside ours ------------------------------------------------------------
def test_research_side_needs_all_three_paths(tmp_path):
    assert research_side.configured({}) is None  # not asked for: make bench skips it
    with pytest.raises(ValueError, match="set ORIG_CLOUDML, RESEARCH_PY too"):
        research_side.configured({"RESEARCH_BENCH": str(tmp_path)})
    env = {"RESEARCH_BENCH": str(tmp_path), "ORIG_CLOUDML": str(tmp_path / "orig"),
           "RESEARCH_PY": str(tmp_path / "py")}  # fmt: skip
    with pytest.raises(ValueError, match=r"RESEARCH_BENCH=.*bench_original.py not found"):
        research_side.configured(env)
    (tmp_path / "bench_original.py").write_text("")
    (tmp_path / "orig/src").mkdir(parents=True)
    (tmp_path / "orig/src/hdf5_dataset.py").write_text("")
    with pytest.raises(ValueError, match="RESEARCH_PY="):
        research_side.configured(env)
    (tmp_path / "py").write_text("")
    assert research_side.configured(env) == env
    with pytest.raises(ValueError, match="must not contain '.'"):
        research_side.scratch_dir({"RESEARCH_SCRATCH": "/tmp/a.b/c"})
    assert research_side.scratch_dir({}) == Path(research_side.DEFAULT_SCRATCH)


def test_research_result_line_is_the_last_one():
    out = 'noise\nRESULT {"a": 1}\nmore\nRESULT {"a": 2}\n'
    assert research_side.result_line(out) == {"a": 2}
    with pytest.raises(ValueError, match="no RESULT line"):
        research_side.result_line("{}\n")


def test_research_section_renders_paired_ratio_and_loader():
    import doc_research

    empty = "\n".join(doc_research.research_lines({}, {}))
    assert "not measured yet" in empty and "RESEARCH_PY=" in empty
    fig = lambda v, u="samples/s": common.figure(v, u, "bench/research_side.py")  # noqa: E731
    rs = {"full_jemalloc_ours_samples_per_s": fig([0.2, 0.3]),
          "full_jemalloc_research_samples_per_s": fig([0.1, 0.2]),
          "full_jemalloc_ratio": common.ratio_figure([0.2, 0.3], [0.1, 0.2], "x", "c"),
          "full_jemalloc_ours_mfu": fig([0.3, 0.4], "fraction"),
          "loader_research_samples_per_s": fig([10.0, 12.0, 11.0]),
          "matmul_flops_per_s": fig([1.5e11], "FLOP/s"),
          "train_flops": {"ours": {"440x640": 3.17e11}, "research": {"440x640": 3.16e11}},
          "measured_utc": "now", "seconds": 1}  # fmt: skip
    ld = {"production_samples_per_s": fig([550.0])}
    lines = doc_research.research_lines(rs, ld)
    ratio = next(r for r in lines[-8:] + lines if "paired per round" in r)
    assert "| 1.75 | 1.5–2 | 2 |" in ratio  # pairs (0.2/0.1, 0.3/0.2), not a ratio of medians
    mfu_row = next(r for r in lines if "CloudML MFU" in r)
    assert "| 35 | 30–40 | 2 |" in mfu_row
    assert not any("glibc" in r for r in lines if r.startswith("|"))  # never measured
    assert any("550 samples/s" in r and "50x" in r for r in lines)
    assert "research 316, CloudML 317" in "\n".join(lines)


def test_unconfigured_research_keeps_its_last_figures(tmp_path, monkeypatch):
    results, doc = tmp_path / "results.json", tmp_path / "bench.md"
    old = {"loader_research_samples_per_s": common.figure([9.0], "samples/s", "c"),
           "measured_utc": "earlier", "seconds": 5}  # fmt: skip
    common.write_json(results, {"sections": {"research": old}})
    for k in research_side.ENV_VARS:
        monkeypatch.delenv(k, raising=False)
    rc = bench_run.main(["--only", "research", "--results", str(results), "--doc", str(doc)])
    assert rc == 0
    assert json.loads(results.read_text())["sections"]["research"] == old
    assert "_Measured earlier in 5 s._" in doc.read_text()


def test_profile_kinds_sort_operators():
    import profile_step

    assert profile_step.kind_of("aten::convolution_backward") == "conv backward"
    assert profile_step.kind_of("aten::mkldnn_convolution") == "conv forward"
    assert profile_step.kind_of("ConvolutionBackward0") == "autograd nodes"
    assert profile_step.kind_of("aten::native_batch_norm_backward") == "batchnorm"
    assert profile_step.kind_of("aten::uniform_") == "dropout draws"
    assert profile_step.kind_of("aten::_foreach_lerp_") == "optimizer"
    assert profile_step.kind_of("aten::isnan") == "other"
    got = profile_step.shares({"aten::mkldnn_convolution": 3.0, "aten::mul": 1.0})
    assert got == {"conv forward": 0.75, "elementwise": 0.25}
    with pytest.raises(ValueError, match="no operator time"):
        profile_step.shares({})


def test_step_anatomy_figures_and_note(monkeypatch):
    import doc_sections
    import step_anatomy

    gib = 2**30
    recs = {"full-nockpt-0": (4, 8.0, 6 * gib), "full-nockpt-1": (4, 10.0, 6 * gib),
            "full-nockpt-probe-b2": (2, 5.0, 4 * gib)}  # fmt: skip

    def fake(batch, steps, warmup, tag):
        b, step_s, rss = recs[tag]
        assert b == batch
        return {"batch": b, "step_s_median": step_s, "peak_rss_bytes": rss, "command": tag}

    prof_line = '{"batch": 4, "step_s": 9.5, "shares": {"conv forward": 0.6, "batchnorm": 0.4}}'
    monkeypatch.setattr(step_anatomy, "nockpt_child", fake)
    monkeypatch.setattr(step_anatomy, "run_child",
                        lambda cmd, env, tag: {"rc": 0, "stdout": prof_line, "log": tag})  # fmt: skip
    out = step_anatomy.step_anatomy(4, 2, train_flops=1e9, peak=1e9)
    assert out["full_nockpt_samples_per_s"]["runs"] == [0.5, 0.4]
    assert out["full_nockpt_mfu"]["median"] == pytest.approx(0.45)
    # 4 GiB + 1 GiB per sample x 18
    assert out["full_nockpt_b20_rss_estimate_gib"] == pytest.approx(22.0)
    tr = {**out, "full_jemalloc_samples_per_s": common.figure([0.3], "samples/s", "c", batch=4)}
    text = "\n".join(doc_sections.train_lines(tr))
    assert "Checkpointing costs 33% of the throughput" in text and "~22 GiB" in text
    assert "| conv forward | 60% |" in text and "step of 9.5 s" in text


def test_stages_together_leaves_out_the_total():
    from run_sections import stages_together

    st = {"ingest": 8.0, "pretrain": 75.0, "finetune": 204.0, "evaluate": 1.5, "total": 304.0,
          "_gate_rc": 0}  # fmt: skip
    assert stages_together(st) == 288.5


def test_precision_section_pairs_rounds_and_says_whether_bf16_applied():
    import doc_sections
    import run_sections

    def rec(sps, bf16):  # samples/s as train_bench rounds it; the figure uses the step time
        return {"samples_per_s": round(sps, -1), "step_s_median": 20 / sps, "batch": 20,
                "bf16": bf16, "command": "train_bench --bf16"}  # fmt: skip

    pairs = {"local": [(rec(100.0, False), rec(154.0, True)), (rec(80.0, False), rec(160.0, True))]}
    out = run_sections.precision_figures(pairs)
    # paired by round, not medians; from the step time, not the rounded samples/s
    assert out["local_bf16_speedup"]["runs"] == pytest.approx([1.54, 2.0])
    assert out["local_fp32_samples_per_s"]["median"] == 90.0 and out["local_bf16_applied"]
    text = "\n".join(doc_sections.precision_lines(out))
    assert "bf16 applied on this CPU" in text and "| local B=20: float32 (samples/s) | 90" in text
    assert "| full B=?: float32 | not measured" in text  # never measured: says so
    pairs["local"][0] = (rec(100.0, False), rec(101.0, False))  # a CPU without native bf16
    text = "\n".join(doc_sections.precision_lines(run_sections.precision_figures(pairs)))
    assert "bf16 did NOT apply on this CPU" in text


def test_train_bench_bf16_flag_reports_what_applied(tmp_path):
    import subprocess

    from cloudml.model import bf16_applies

    out = subprocess.run(
        [sys.executable, str(BENCH / "train_bench.py"), "--size", "8x10", "--batch", "2",
         "--frames", "2", "--steps", "1", "--warmup", "0", "--bf16", "--threads", "1"],
        capture_output=True, text=True, timeout=120, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert (tmp_path / "build/bench/train.jsonl").is_file()  # its log, not the repo's
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert rec["bf16"] is bf16_applies("cpu", True) and rec["samples_per_s"] > 0


def test_timed_make_runs_start_each_run_on_an_empty_store(tmp_path, monkeypatch):
    """A timed `make run` must train from scratch: an identical earlier run's stage state in
    the store would be resumed (cloudml.store.resume), so each run gets its own empty
    CLOUDML_STORE, removed after it."""
    import run_sections

    seen = []

    def fake_child(cmd, env, log_name, stream=False):
        store = Path(env["CLOUDML_STORE"])
        seen.append((store, sorted(store.iterdir())))
        (store / "runs").mkdir()  # what a run leaves there
        d = tmp_path / "runs" / f"tuned-{len(seen)}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"seconds": {"pretrain": 1.0, "total": 2.0}}))
        return {"rc": 0, "wall_s": 3.0 + len(seen)}

    monkeypatch.setattr(run_sections, "run_child", fake_child)
    monkeypatch.setattr(run_sections, "REPO", tmp_path)
    monkeypatch.setattr(run_sections, "newest_run_dir",
                        lambda runs, pipeline, after=0.0: sorted(runs.iterdir())[-1])  # fmt: skip
    monkeypatch.setenv("CLOUDML_STORE", str(tmp_path / "users-store"))
    walls, stages = run_sections._timed_make_runs(2, [], "t")
    assert walls == [4.0, 5.0] and len(stages) == 2
    (a, a_files), (b, b_files) = seen
    assert a != b and a_files == [] == b_files
    assert not a.exists() and not b.exists()
    assert tmp_path / "users-store" not in (a, b)
