"""What `cloudml run` shows: a line per stage, a live line per training stage, the ending.

Two halves meet through one line format:

- the training tasks (cloudml.training.loop.fit) print a progress event at the start of a
  stage and after every epoch, one line `@cloudml-progress {json}` on stdout, and only when
  CLOUDML_PROGRESS=1, which `cloudml run` sets for its tasks (a pod on the cluster prints
  none);
- `cloudml run` reads everything KFP's local runner prints (its own log lines, each task's
  relayed output, warnings) through `capture()`. Every line goes to runs/<run>/pipeline.log
  except the progress events, which become the live line (tqdm on a terminal, a plain line
  at most once a minute otherwise) and the stage's finished line.

Why lines on stdout and not a progress file per stage: the local runner already relays each
task's stdout to the parent line by line as it is written, so the parent needs no polling
thread and leaves no files behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

PROGRESS_ENV = "CLOUDML_PROGRESS"
PROGRESS_TAG = "@cloudml-progress "
SHOWN = ("ingest", "pretrain", "finetune", "evaluate", "gate", "promote")  # pipeline order
TRAINING = ("pretrain", "finetune")
PLAIN_EVERY_S = 60.0  # without a terminal: at most one progress line a minute per stage
TAIL_LINES = 12  # of a failed task's output, shown on screen

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([\w-]+)'")
_END = re.compile(r"Task '([\w-]+)' finished with status (SUCCESS|FAILURE)")
_CACHED = re.compile(r"Task '?([\w-]+)'? cache hit")


# --- the training tasks' side -----------------------------------------------------------------
def emit(event: dict[str, Any]) -> None:
    """Print one progress event for `cloudml run`; nothing unless it asked (CLOUDML_PROGRESS=1)."""
    if os.environ.get(PROGRESS_ENV) == "1":
        sys.stdout.write(PROGRESS_TAG + json.dumps(event, separators=(",", ":")) + "\n")
        sys.stdout.flush()


def parse_progress(line: str) -> dict[str, Any] | None:
    """The progress event in `line` (the runner indents relayed lines), or None."""
    i = line.find(PROGRESS_TAG)
    if i < 0:
        return None
    try:
        event = json.loads(line[i + len(PROGRESS_TAG) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


# --- pure formatting ------------------------------------------------------------------------------
def fmt_duration(seconds: float) -> str:
    """'4.2 s', '42 s', '3 min 05 s', '1 h 02 min'."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def eta_range(epoch: int, cap: int, patience_left: int, s_per_epoch: float) -> tuple[float, float]:
    """(least, most) seconds left in a training stage after `epoch`: early stopping ends it
    after `patience_left` more epochs if the selection loss never improves again, the epoch
    cap after `cap - epoch` whatever happens."""
    left = max(cap - epoch, 0)
    return min(max(patience_left, 0), left) * s_per_epoch, left * s_per_epoch


def fmt_eta(lo: float, hi: float) -> str:
    """'ETA 40 s', or a range 'ETA 40 s–3 min 10 s' when early stopping may end it sooner."""
    if fmt_duration(lo) == fmt_duration(hi):
        return f"ETA {fmt_duration(hi)}"
    return f"ETA {fmt_duration(lo)}–{fmt_duration(hi)}"


def progress_text(event: dict[str, Any], k: int, n: int, member: int, members: int) -> str:
    """The live line of a training stage: stage k of n, member, epoch (of the cap), best epoch
    and its selection-split loss, patience left, speed, time left."""
    head = f"[{k}/{n}] {event['stage']}, member {member}/{members}"
    if event.get("event") != "epoch":
        return f"{head}: starting, at most {event['epochs']} epochs"
    epoch, cap = int(event["epoch"]), int(event["epochs"])
    per_epoch = float(event["elapsed_s"]) / max(epoch, 1)
    lo, hi = eta_range(epoch, cap, int(event["patience_left"]), per_epoch)
    # most telling first: a narrow terminal trims the line's end
    return (
        f"{head}: epoch {epoch} of at most {cap} · {fmt_eta(lo, hi)} · best epoch "
        f"{event['best_epoch']} (selection loss {event['best_selection_loss']:.4f}) · "
        f"patience {event['patience_left']}/{event['patience']} · "
        f"{event['samples_per_s']:.0f} samples/s"
    )


def training_summary(event: dict[str, Any] | None) -> str:
    """What a finished training stage did, from its last progress event."""
    if not event or event.get("event") != "epoch":
        return ""
    how = "stopped early after" if event.get("stopped_early") else "ran"
    return (
        f"{how} {event['epoch']} of at most {event['epochs']} epochs, best epoch "
        f"{event['best_epoch']} (selection loss {event['best_selection_loss']:.4f})"
    )


def stage_line(label: str, seconds: float, detail: str = "", ok: bool = True) -> str:
    """One finished stage on screen: mark, label, time, what it did."""
    mark = "✓" if ok else "✗"
    return f"{mark} {label:<22} {fmt_duration(seconds):>10}  {detail}".rstrip()


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of (start, end) spans: members one after another add up,
    flights ingested side by side count once."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def stage_rows(spans: dict[str, list[tuple[float, float]]]) -> list[tuple[str, str, str]]:
    """(label, time, detail) per shown stage, in pipeline order; several ingests are one row
    (the flights), several members of a training stage one row with each member's time."""
    rows = []
    for name in SHOWN:
        ss = spans.get(name)
        if not ss:
            continue
        label, detail = name, ""
        if len(ss) > 1 and name == "ingest":
            label = f"ingest, {len(ss)} flights"
        elif len(ss) > 1 and name in TRAINING:
            label = f"{name}, {len(ss)} members"
            detail = "each " + " / ".join(fmt_duration(e - s) for s, e in ss)
        rows.append((label, fmt_duration(busy_seconds(ss)), detail))
    return rows


def _num(x: Any, fmt: str) -> str:
    return format(float(x), fmt) if isinstance(x, int | float) and math.isfinite(x) else "?"


def metric_rows(m: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(name, value, 95% interval, meaning) of each validation figure present in `m`."""

    def interval(key: str, fmt: str) -> str:
        lo, hi = m.get(f"{key}_lo"), m.get(f"{key}_hi")
        return f"[{_num(lo, fmt)}, {_num(hi, fmt)}]" if lo is not None and hi is not None else ""

    spec = (
        ("R²", "r2", "", ".3f", "share of the cloud-base height variance explained (1 perfect)"),
        ("MAE", "mae_km", " km", ".3f", "mean absolute error"),
        ("RMSE", "rmse_km", " km", ".3f", "root mean square error"),
        ("bias", "bias_km", " km", "+.3f", "mean of predicted − true (> 0: predicts too high)"),
        ("std ratio", "std_ratio", "", ".3f", "std(predicted) / std(true); near 0: collapsed"),
        ("baseline R²", "baseline_r2", "", ".3f", "ridge on frame statistics + sun angles"),
    )
    rows = [(name, _num(m[key], fmt) + unit, interval(key, fmt), meaning)
            for name, key, unit, fmt, meaning in spec if key in m]  # fmt: skip
    if "member_r2_min" in m and "member_r2_max" in m and m.get("ensemble_size") != 1:
        k = m.get("ensemble_size", "the")
        mid = m.get("member_r2_median", math.nan)
        span = f"[{_num(m['member_r2_min'], '.3f')}, {_num(m['member_r2_max'], '.3f')}]"
        rows.append((
            "member R²", _num(mid, ".3f"), span,
            f"median [lowest, highest] of the {k} members alone; the ensemble averages them",
        ))  # fmt: skip
    return rows


def format_ending(
    spans: dict[str, list[tuple[float, float]]],
    total_s: float,
    metrics: dict[str, Any],
    flight: str,
    verdict: str,
    promotion: str,
    files: list[tuple[str, str]],
) -> str:
    """The end of `cloudml run`: stages in pipeline order with their times, the validation
    figures with units and meaning, the gate verdict, the promotion outcome, the files."""
    rows = [*stage_rows(spans), ("total", fmt_duration(total_s), "wall time of the run")]
    w = max(len(r[0]) for r in rows)
    lines = ["", "stages"]
    lines += [f"  {a:<{w}}  {b:>10}  {c}".rstrip() for a, b, c in rows]
    n = metrics.get("n", "?")
    lines += ["", f"validation flight {flight} ({n} samples, never used to train or to pick an "
                  "epoch), 95% intervals:"]  # fmt: skip
    mr = metric_rows(metrics)
    if mr:
        w0, w1, w2 = (max(len(r[i]) for r in mr) for i in range(3))
        lines += [f"  {a:<{w0}}  {b:>{w1}}  {c:<{w2}}  {d}" for a, b, c, d in mr]
    lines += ["", verdict, f"promotion: {promotion}", "", "files"]
    w = max(len(k) for k, _ in files)
    lines += [f"  {k:<{w}}  {v}" for k, v in files]
    return "\n".join(lines)


# --- the runner's side: one line at a time --------------------------------------------------------
class Console:
    """Every line the local runner prints goes through `feed`: into the log (all but the
    progress events), and on `screen` a line per finished stage and the live training line.

    `flights` and `seeds` say what to expect: the ingest row appears when all flights are in,
    and a member's number is its seed's place in `seeds`; `models` is how many ensembles the
    run trains (a sweep's variants, a leave-one-flight-out's folds), so the stage counter
    runs to 2 x members x models. `verbose` echoes the log lines to
    the screen as they come (and then shows no live line between them)."""

    def __init__(
        self,
        screen: TextIO,
        log: TextIO,
        *,
        log_path: Path | str,
        flights: int,
        seeds: list[int],
        models: int = 1,
        verbose: bool = False,
        clock: Callable[[], float] = time.monotonic,
        plain_every: float = PLAIN_EVERY_S,
    ) -> None:
        self.screen, self.log, self.log_path = screen, log, str(log_path)
        self.flights, self.seeds, self.verbose = flights, list(seeds), verbose
        self.stages = 2 * len(self.seeds) * max(1, models)  # pretrain + finetune per member
        isatty = getattr(screen, "isatty", None)
        # a live line needs a terminal that reports its width (tqdm trims the line to it;
        # a pseudo-terminal of 0 columns would show nothing): else plain lines
        self.live = bool(isatty and isatty()) and _width(screen) > 0 and not verbose
        self.clock, self.plain_every = clock, plain_every
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self.failed: list[str] = []
        self._starts: dict[str, list[float]] = {}
        self._training: dict[str, dict[str, Any]] = {}  # stage -> the member now training
        self._started = 0  # training stages started
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._lock = threading.RLock()

    # screen
    def say(self, text: str) -> None:
        """A line on screen, above the live line if there is one."""
        with self._lock:
            bars = [t["bar"] for t in self._training.values() if t.get("bar") is not None]
            if bars:
                bars[0].write(text, file=self.screen)
            else:
                self.screen.write(text + "\n")
                self.screen.flush()

    # input
    def feed(self, line: str) -> None:
        """One complete line the runner printed (without its newline)."""
        clean = _ANSI.sub("", line)
        with self._lock:
            event = parse_progress(clean)
            if event is not None:
                self._progress(event)
                return
            self.log.write(clean + "\n")
            self.log.flush()
            if self.verbose:
                self.screen.write(line + "\n")
                self.screen.flush()
            if m := _START.search(clean):
                self._start(m.group(1))
            elif m := _END.search(clean):
                self._end(m.group(1), m.group(2) == "SUCCESS")
            elif m := _CACHED.search(clean):
                self._start(m.group(1))
                self._end(m.group(1), True, cached=True)
            elif clean.startswith(" ") and clean.strip():
                self._tail.append(clean.strip())

    def task_failed(self, name: str) -> None:
        """`name` failed (the runner's exception said so): its ✗ line, unless one was shown."""
        with self._lock:
            if name not in self.failed:
                self._end(name, False)

    def _start(self, name: str) -> None:
        self._starts.setdefault(name, []).append(self.clock())
        if name not in ("ingest", "gate"):
            self._tail.clear()

    def _end(self, name: str, ok: bool, cached: bool = False) -> None:
        now = self.clock()
        starts = self._starts.get(name) or [now]
        span = (starts.pop(0), now)
        self.spans.setdefault(name, []).append(span)
        if name not in SHOWN:
            return
        seconds = span[1] - span[0]
        if not ok:
            self.failed.append(name)
            self._close_bar(name)
            if name == "gate":
                self.say(stage_line("gate", seconds, "FAILED: the verdict is below", ok=False))
                return
            self.say(stage_line(name, seconds, f"FAILED; its last lines (all in {self.log_path}):",
                                ok=False))  # fmt: skip
            for text in self._tail:
                self.say(f"    {text}")
            return
        detail = "cached" if cached else ""
        if name == "ingest":  # a row per model's full set of flights (experiments ingest again)
            done = len(self.spans["ingest"])
            if done % self.flights:
                return
            last = self.spans["ingest"][-self.flights :]
            self.say(stage_line(f"ingest, {self.flights} flights", busy_seconds(last), detail))
            return
        if name in TRAINING:
            t = self._close_bar(name) or {}
            # a cached stage sent no events: its member is its place in the order
            member = t.get("member", len(self.spans[name]))
            label = f"{name}, member {member}/{len(self.seeds)}"
            self.say(stage_line(label, seconds, detail or training_summary(t.get("event"))))
            return
        self.say(stage_line(name, seconds, detail))

    def _close_bar(self, name: str) -> dict[str, Any] | None:
        t = self._training.pop(name, None)
        if t is not None and t.get("bar") is not None:
            t["bar"].close()
        return t

    def _progress(self, event: dict[str, Any]) -> None:
        stage = str(event.get("stage", "?"))
        seed = event.get("seed")
        member = self.seeds.index(seed) + 1 if seed in self.seeds else "?"
        t = self._training.get(stage)
        if event.get("event") == "start" or t is None:
            self._close_bar(stage)
            self._started += 1
            t = {"k": self._started, "member": member, "bar": None, "shown": self.clock()}
            self._training[stage] = t
        t["event"] = event
        text = progress_text(event, t["k"], self.stages, member, len(self.seeds))
        if self.live and t["bar"] is None:
            from tqdm import tqdm

            t["bar"] = tqdm(desc=text, bar_format="{desc} · {elapsed}", file=self.screen,
                            dynamic_ncols=True, leave=False)  # fmt: skip
        elif t["bar"] is not None:
            t["bar"].set_description_str(text)
        elif not self.verbose and event.get("event") == "epoch" and not event.get("finished"):
            now = self.clock()
            if now - t["shown"] >= self.plain_every:
                t["shown"] = now
                self.say(f"  {text}")


def _width(screen: TextIO) -> int:
    """The terminal's width in columns, 0 when it reports none."""
    try:
        return os.get_terminal_size(screen.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class _LineSink:
    """A text stream that hands complete lines to `feed`; each thread keeps its own partial
    line (the runner relays the ingest tasks' output from several threads at once)."""

    encoding = "utf-8"

    def __init__(self, feed: Callable[[str], None]) -> None:
        self._feed = feed
        self._local = threading.local()

    def write(self, s: str) -> int:
        buf = getattr(self._local, "buf", "") + s
        *lines, self._local.buf = buf.split("\n")
        for line in lines:
            self._feed(line)
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def close_thread_line(self) -> None:
        """Hand on what this thread wrote after its last newline."""
        rest = getattr(self._local, "buf", "")
        self._local.buf = ""
        if rest:
            self._feed(rest)


@contextlib.contextmanager
def capture(console: Console) -> Iterator[None]:
    """Route this process's stdout, stderr, warnings and root-logger output through
    `console` (the local runner logs to whatever sys.stdout is when a task starts), and tell
    the training tasks to print progress events; everything is put back on exit."""
    sink = _LineSink(console.feed)
    handler = logging.StreamHandler(sink)  # type: ignore[arg-type]
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_env = os.environ.get(PROGRESS_ENV)
    saved_out, saved_err = sys.stdout, sys.stderr
    saved_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        # set explicitly: a caller's warnings.catch_warnings(record=True), pytest's for one,
        # would otherwise keep the runner's warnings from any stream
        sink.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = show
    root.handlers[:] = [handler]
    root.setLevel(min(saved_level or logging.INFO, logging.INFO))
    os.environ[PROGRESS_ENV] = "1"
    sys.stdout = sys.stderr = sink  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved_out, saved_err
        warnings.showwarning = saved_show
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        if saved_env is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = saved_env
        sink.close_thread_line()
        for stage in list(console._training):
            console._close_bar(stage)
