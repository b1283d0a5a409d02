"""What `cloudml run` shows (cloudml.console): the pure formatting, the Console fed a
scripted local-runner stream with a fake clock, and capture() routing this process's output.

The whole path through a real local run (line count, pipeline.log contents, the ending's
files) is asserted in tests/test_local_run.py's passing run."""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings

import pytest

from cloudml.console import (
    PROGRESS_ENV,
    Console,
    busy_seconds,
    capture,
    emit,
    eta_range,
    fmt_duration,
    fmt_eta,
    format_ending,
    metric_rows,
    parse_progress,
    progress_text,
    stage_line,
    stage_rows,
    training_summary,
)

EPOCH = {
    "event": "epoch", "stage": "pretrain", "seed": 43, "epoch": 7, "epochs": 50,
    "best_epoch": 5, "best_selection_loss": 0.42816, "patience": 10, "patience_left": 8,
    "samples_per_s": 161.6, "elapsed_s": 14.0, "finished": False, "stopped_early": False,
}  # fmt: skip


# --- pure ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0 s"), (4.24, "4.2 s"), (42.4, "42 s"), (59.6, "1 min 00 s"),
     (185, "3 min 05 s"), (3725, "1 h 02 min"), (float("nan"), "?")],
)  # fmt: skip
def test_fmt_duration(seconds, text):
    assert fmt_duration(seconds) == text


def test_eta_range_runs_from_patience_left_to_the_epoch_cap():
    assert eta_range(7, 50, 8, 2.0) == (16.0, 86.0)  # 8 more without improvement .. 43 more
    assert eta_range(48, 50, 8, 2.0) == (4.0, 4.0)  # the cap comes first
    assert eta_range(50, 50, 10, 2.0) == (0.0, 0.0)
    assert fmt_eta(16.0, 86.0) == "ETA 16 s–1 min 26 s"
    assert fmt_eta(4.0, 4.0) == "ETA 4.0 s"


def test_progress_text_names_stage_member_epoch_best_patience_speed_eta():
    assert progress_text(EPOCH, 3, 6, 2, 3) == (
        "[3/6] pretrain, member 2/3: epoch 7 of at most 50 · ETA 16 s–1 min 26 s · best epoch 5 "
        "(selection loss 0.4282) · patience 8/10 · 162 samples/s"
    )
    start = {"event": "start", "stage": "finetune", "seed": 42, "epochs": 50}
    assert (
        progress_text(start, 2, 6, 1, 3)
        == "[2/6] finetune, member 1/3: starting, at most 50 epochs"
    )


def test_training_summary_and_stage_line():
    assert training_summary(EPOCH) == (
        "ran 7 of at most 50 epochs, best epoch 5 (selection loss 0.4282)"
    )
    assert training_summary({**EPOCH, "stopped_early": True}).startswith("stopped early after 7")
    assert training_summary(None) == ""
    assert stage_line("evaluate", 4.71) == "✓ evaluate" + " " * 20 + "4.7 s"  # label 22, time 10
    assert stage_line("gate", 0.2, "FAILED", ok=False) == "✗ gate" + " " * 24 + "0.2 s  FAILED"


def test_busy_seconds_counts_overlaps_once():
    assert busy_seconds([(0.0, 10.0), (5.0, 12.0)]) == 12.0  # side by side
    assert busy_seconds([(20.0, 25.0), (0.0, 10.0)]) == 15.0  # one after another
    assert busy_seconds([(0.0, 10.0), (2.0, 3.0)]) == 10.0
    assert busy_seconds([]) == 0.0


def test_stage_rows_in_pipeline_order_with_members_grouped():
    spans = {
        "promote": [(90.0, 90.5)],
        "resolve-config": [(0.0, 0.2)],  # bookkeeping: not a row
        "pretrain": [(10.0, 30.0), (50.0, 72.0)],
        "ingest": [(1.0, 4.0), (1.5, 5.0)],
        "finetune": [(30.0, 50.0), (72.0, 80.0)],
    }
    assert stage_rows(spans) == [
        ("ingest, 2 flights", "4.0 s", ""),
        ("pretrain, 2 members", "42 s", "each 20 s / 22 s"),
        ("finetune, 2 members", "28 s", "each 20 s / 8.0 s"),
        ("promote", "0.5 s", ""),
    ]


METRICS = {
    "r2": 0.3596, "r2_lo": 0.3012, "r2_hi": 0.4181, "mae_km": 0.2104, "mae_km_lo": 0.19,
    "mae_km_hi": 0.23, "bias_km": 0.145, "std_ratio": 0.85, "baseline_r2": 0.2, "n": 148,
    "ensemble_size": 3, "member_r2_min": 0.31, "member_r2_median": 0.33, "member_r2_max": 0.35,
}  # fmt: skip


def test_metric_rows_carry_units_intervals_and_meaning():
    rows = {r[0]: r[1:] for r in metric_rows(METRICS)}
    assert rows["R²"][:2] == ("0.360", "[0.301, 0.418]")
    assert rows["MAE"][:2] == ("0.210 km", "[0.190, 0.230]")
    assert rows["bias"][:2] == ("+0.145 km", "")  # no interval given: none shown
    assert rows["bias"][2].startswith("mean of predicted − true")
    assert rows["member R²"] == (
        "0.330",
        "[0.310, 0.350]",
        "median [lowest, highest] of the 3 members alone; the ensemble averages them",
    )
    assert "RMSE" not in rows  # absent from the metrics: no row
    assert "member R²" not in {r[0] for r in metric_rows({**METRICS, "ensemble_size": 1})}


def test_format_ending_orders_stages_figures_verdict_promotion_files():
    text = format_ending(
        {"evaluate": [(0.0, 4.7)], "ingest": [(0.0, 3.0)]}, 100.0, METRICS, "12Feb25",
        "gate PASSED on validation flight 12Feb25: ...", "this run is the first champion",
        [("report", "r/report.html"), ("model card", "r/model_card.md"), ("log", "r/pipeline.log")],
    )  # fmt: skip
    lines = text.splitlines()
    assert lines[1:5] == [
        "stages",
        "  ingest         3.0 s",
        "  evaluate       4.7 s",
        "  total     1 min 40 s  wall time of the run",
    ]
    assert lines[6].startswith("validation flight 12Feb25 (148 samples, never used to train")
    assert lines[-8:] == [
        "",
        "gate PASSED on validation flight 12Feb25: ...",
        "promotion: this run is the first champion",
        "",
        "files",
        "  report      r/report.html",
        "  model card  r/model_card.md",
        "  log         r/pipeline.log",
    ]


# --- the progress events --------------------------------------------------------------------------
def test_emit_prints_only_when_asked_and_parses_back(monkeypatch, capsys):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    emit(EPOCH)
    assert capsys.readouterr().out == ""  # a cluster pod's log gets none
    monkeypatch.setenv(PROGRESS_ENV, "1")
    emit(EPOCH)
    line = capsys.readouterr().out
    assert line.count("\n") == 1
    assert parse_progress("    " + line.strip()) == EPOCH  # as the runner relays it, indented
    assert parse_progress("pretrain epoch 7 (at most 50): ...") is None
    assert parse_progress("@cloudml-progress {not json") is None


# --- the Console on a scripted stream -----------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _console(clock: Clock, **kw) -> tuple[Console, io.StringIO, io.StringIO]:
    screen, log = io.StringIO(), io.StringIO()
    c = Console(screen, log, log_path="runs/x/pipeline.log", flights=2, seeds=[42, 43],
                clock=clock, **kw)  # fmt: skip
    return c, screen, log


def _ev(**kw) -> str:
    import json

    return "    @cloudml-progress " + json.dumps({**EPOCH, "seed": 42, **kw})


def test_console_shows_a_line_per_stage_and_logs_everything_else():
    clock = Clock()
    c, screen, log = _console(clock)

    def at(t: float, *lines: str) -> None:
        clock.t = t
        for line in lines:
            c.feed(line)

    at(0, "12:00:00.001 - INFO - Executing task \x1b[96m'fingerprint'\x1b[0m")
    at(0.1, "12:00:00.101 - INFO - Task \x1b[96m'fingerprint'\x1b[0m finished with status "
            "\x1b[92mSUCCESS\x1b[0m")  # fmt: skip
    at(1, "Executing task 'ingest'", "Executing task 'ingest'")  # two flights side by side
    at(3, "Task 'ingest' finished with status SUCCESS")
    assert screen.getvalue() == ""  # one flight of two: no row yet
    at(4, "Task 'ingest' finished with status SUCCESS")
    at(5, "Executing task 'pretrain'", "    [KFP Executor ...]: Got executor_input:")
    at(5, _ev(event="start", epoch=0))
    at(20, _ev(epoch=1, finished=False), "    pretrain epoch 1 (at most 50): ...")
    at(70, _ev(epoch=2, finished=False))  # a minute after the start: one plain line
    at(80, _ev(epoch=3, finished=False))  # 10 s later: none
    at(90, _ev(epoch=4, best_epoch=2, finished=True, stopped_early=True))
    at(91, "Task 'pretrain' finished with status SUCCESS")
    at(92, "Executing task 'evaluate'")
    at(96, "Task 'evaluate' finished with status SUCCESS")
    assert screen.getvalue().splitlines() == [
        stage_line("ingest, 2 flights", 3.0),
        "  [1/4] pretrain, member 1/2: epoch 2 of at most 50 · ETA 56 s–5 min 36 s · best epoch 5 "
        "(selection loss 0.4282) · patience 8/10 · 162 samples/s",
        stage_line(
            "pretrain, member 1/2",
            86.0,
            "stopped early after 4 of at most 50 epochs, best epoch 2 (selection loss 0.4282)",
        ),  # fmt: skip
        stage_line("evaluate", 4.0),
    ]
    text = log.getvalue()
    assert "Executing task 'fingerprint'" in text and "\x1b" not in text  # colour codes dropped
    assert "Got executor_input" in text and "pretrain epoch 1 (at most 50)" in text
    assert "@cloudml-progress" not in text
    assert c.spans["ingest"] == [(1, 3), (1, 4)] and c.spans["pretrain"] == [(5, 91)]


def test_console_failed_task_shows_its_last_lines_and_the_log():
    clock = Clock()
    c, screen, _ = _console(clock)
    c.feed("Executing task 'evaluate'")
    for i in range(20):
        c.feed(f"    line {i}")
    clock.t = 2.0
    c.feed("Task 'evaluate' finished with status FAILURE")
    shown = screen.getvalue().splitlines()
    assert shown[0] == stage_line(
        "evaluate", 2.0, "FAILED; its last lines (all in runs/x/pipeline.log):", ok=False
    )
    assert shown[1:] == [f"    line {i}" for i in range(8, 20)]  # the last 12
    assert c.failed == ["evaluate"]


def test_console_verbose_echoes_the_log_and_prints_no_progress_lines():
    clock = Clock()
    c, screen, log = _console(clock, verbose=True)
    c.feed("    some task output")
    clock.t = 500
    c.feed(_ev(event="start", epoch=0))
    c.feed(_ev(epoch=1))
    assert screen.getvalue() == "    some task output\n" == log.getvalue()


# --- capture: this process's output into the console ------------------------------------------
def test_capture_routes_prints_warnings_logging_and_progress_then_restores(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    c, screen, log = _console(Clock())
    out_before, handlers_before = sys.stdout, logging.getLogger().handlers[:]
    with capture(c):
        print("runner line")
        warnings.warn("settings have no effect", UserWarning, stacklevel=1)
        logging.getLogger("kfp.test").info("logged line")
        assert os.environ[PROGRESS_ENV] == "1"  # the tasks inherit it
        emit({"event": "start", "stage": "pretrain", "seed": 43, "epochs": 5})
        sys.stdout.write("no newline at the end")
    assert sys.stdout is out_before and logging.getLogger().handlers == handlers_before
    assert PROGRESS_ENV not in os.environ
    text = log.getvalue()
    for piece in ("runner line\n", "UserWarning: settings have no effect", "logged line",
                  "no newline at the end\n"):  # fmt: skip
        assert piece in text, piece
    assert "@cloudml-progress" not in text and screen.getvalue() == ""
    assert c._started == 1  # the event reached the console


def test_epoch_log_line_says_what_the_mark_meant():
    from cloudml.config import load_config
    from cloudml.training.loop import epoch_line
    from cloudml.training.state import TrainState

    tc = load_config("tuned").train
    row = {"stage": "finetune", "epoch": 3, "train_loss": 0.47261, "selection_loss": 0.60514,
           "selection_r2": -0.6423, "lr": 1.6e-05, "seconds": 7.94}  # fmt: skip
    state = TrainState()
    state.best_selection_loss, state.best_epoch, state.bad_epochs = 0.59, 1, 2
    assert epoch_line(row, state, tc, False, 70.6) == (
        "finetune epoch 3 (at most 50): train loss 0.4726, selection-split loss 0.6051 "
        "(best 0.5900 at epoch 1, patience 8 left), selection-split R² -0.642, lr 1.60e-05, "
        "7.9 s (71 samples/s)"
    )
    assert "(new best)" in epoch_line(row, state, tc, True, 70.6)


def test_a_failure_the_runner_only_raised_is_shown_once():
    clock = Clock()
    c, screen, _ = _console(clock)
    c.feed("Executing task 'gate'")
    clock.t = 0.5
    c.task_failed("gate")  # kfp.local raised before logging the task's status
    c.task_failed("gate")
    assert screen.getvalue().splitlines() == [
        stage_line("gate", 0.5, "FAILED: the verdict is below", ok=False)
    ]


def test_cached_tasks_count_as_finished_stages():
    c, screen, _ = _console(Clock())
    for line in ("Task ingest cache hit (key=0123456789ab); skipping execution.",
                 "Task ingest cache hit (key=ba9876543210); skipping execution.",
                 "Task pretrain cache hit (key=0123456789ab); skipping execution."):  # fmt: skip
        c.feed(line)
    assert screen.getvalue().splitlines() == [
        stage_line("ingest, 2 flights", 0.0, "cached"),
        stage_line("pretrain, member 1/2", 0.0, "cached"),
    ]


def test_source_commit_names_the_checkout_and_says_when_it_differs(tmp_path):
    import subprocess

    from cloudml.cluster.local_run import source_commit

    assert source_commit(tmp_path) is None  # not a git checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f.txt").write_text("a\n")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    sha = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    assert source_commit(tmp_path) == sha
    (tmp_path / "f.txt").write_text("b\n")
    assert source_commit(tmp_path) == f"{sha}+dirty"


def test_run_environment_sets_the_store_for_the_run_and_restores_it(tmp_path, monkeypatch):
    import os

    from cloudml.cluster.local_run import run_environment

    monkeypatch.delenv("CLOUDML_STORE", raising=False)
    seen = {}

    @run_environment
    def fake_run(work_dir=tmp_path / "default"):
        seen["store"] = os.environ["CLOUDML_STORE"]

    fake_run(work_dir=tmp_path / "w")
    assert seen["store"] == str((tmp_path / "w" / "store").resolve())
    assert "CLOUDML_STORE" not in os.environ  # the next run gets its own default
    monkeypatch.setenv("CLOUDML_STORE", "s3://bucket/p")  # a configured store is kept
    fake_run()
    assert seen["store"] == "s3://bucket/p" and os.environ["CLOUDML_STORE"] == "s3://bucket/p"


def test_stage_counter_counts_every_model_of_an_experiment():
    """A sweep of 6 variants x 2 members has 24 training stages: the 15th shows as [15/24],
    not [15/4] (found on a full sweep run)."""
    clock = Clock()
    c, screen, _ = _console(clock, models=6)
    for k in range(15):  # 14 stages started and finished before, then the 15th
        stage = "pretrain" if k % 2 == 0 else "finetune"
        c.feed(_ev(event="start", epoch=0, stage=stage))
        if k < 14:
            c.feed(f"Task '{stage}' finished with status SUCCESS")
    clock.t = 70  # a minute after the start: one plain line
    c.feed(_ev(epoch=2, finished=False, stage="pretrain"))
    assert screen.getvalue().splitlines()[-1].startswith("  [15/24] pretrain, member 1/2: epoch 2")


def test_each_models_ingest_gets_its_own_row():
    """An experiment ingests the campaign once per model: "ingest, 2 flights" each time, not
    a count that grows across models."""
    clock = Clock()
    c, screen, _ = _console(clock, models=2)
    for t0 in (0, 10):
        clock.t = t0
        c.feed("Executing task 'ingest'")
        c.feed("Executing task 'ingest'")
        clock.t = t0 + 2
        c.feed("Task 'ingest' finished with status SUCCESS")
        c.feed("Task 'ingest' finished with status SUCCESS")
    assert screen.getvalue().splitlines() == [stage_line("ingest, 2 flights", 2.0)] * 2
