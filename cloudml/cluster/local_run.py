"""`cloudml run`: the training pipeline on KFP's local runner (the embedded default).

    cloudml run --pipeline tuned [--set key=value ...] [--threshold X]
                [--data-dir data/raw] [--runs-dir runs] [--scale local]

The same compiled graph that `cloudml submit` sends to Kubeflow runs here through
kfp.local.SubprocessRunner(use_venv=False): every component executes in a subprocess of this
virtualenv, artifacts stay on local disk (build/kfp-local/), resource/GPU/kfp-kubernetes
settings are ignored. The synthetic campaign is generated into --data-dir on first use and
reused after. The run folder runs/<pipeline>-<UTC timestamp>/ gets metrics.json, report.html,
model_card.md, predictions.csv, the plots, the shipped model and pipeline.log.

The screen shows a line per stage and a live line per training stage (cloudml.console);
everything the local runner prints goes to the run folder's pipeline.log instead (`-v` shows
it as it comes). The ending lists the stages in pipeline order with their times, the
validation figures, the gate verdict, the promotion outcome and the files; its last line is
"run folder  <path>". Exit status 1 when the gate fails, 2 on any other error.
"""

from __future__ import annotations

import argparse
import builtins
import datetime as dt
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudml.config import Config, load_config, parse_overrides, pipeline_keys
from cloudml.config_cli import add_config_args
from cloudml.console import Console, capture, format_ending
from cloudml.errors import CloudMLError, GateFailed
from cloudml.experiments import BASE_PRESET, is_experiment, is_sweep, ranked_on
from cloudml.fileio import atomic_path, check_output_dir
from cloudml.gate import (
    DEFAULT_BEAT_BASELINE,
    DEFAULT_MIN_STD_RATIO,
    DEFAULT_SKILL_MARGIN,
    DEFAULT_THRESHOLD,
    GateVerdict,
    verdict_from_metrics,
)

log = logging.getLogger(__name__)

CAMPAIGN_MARKER = "campaign.json"  # written beside the synthetic flights; read by ingest glue
METRIC_KEYS = ("r2", "r2_lo", "r2_hi", "mae_km", "mae_km_lo", "mae_km_hi", "rmse_km",
               "rmse_km_lo", "rmse_km_hi", "bias_km", "loss", "std_ratio", "n", "ensemble_size",
               "member_r2_min", "member_r2_median", "member_r2_max", "baseline_r2")  # fmt: skip
RUN_FILES = (
    "report.html",
    "model_card.md",
    "predictions.csv",
    "pred_vs_true.png",
    "residuals.png",
    "learning_curves.png",
)


@dataclass
class LocalRunResult:
    run_dir: Path
    metrics: dict[str, Any]
    gate_passed: bool
    gate_message: str
    stages: dict[str, float] = field(default_factory=dict)  # stages.json + total (metrics.json)
    spans: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # per task, wall
    promotion: str = ""  # the promotion outcome, one sentence
    flight: str = ""  # the validation flight
    log_path: Path | None = None
    store: str = ""  # where the run folder is mirrored

    def ending(self) -> str:
        """What `cloudml run` prints last (cloudml.console.format_ending)."""
        files = [(label, str(self.run_dir / name)) for label, name in
                 (("report", "report.html"), ("model card", "model_card.md"))
                 if (self.run_dir / name).is_file()]  # fmt: skip
        if self.log_path is not None:
            files.append(("log", f"{self.log_path}  (everything the local runner printed)"))
        if self.store:
            files.append(("store copy", self.store))
        files.append(("run folder", str(self.run_dir)))
        return format_ending(self.spans, self.stages.get("total", float("nan")), self.metrics,
                             self.flight, self.gate_message, self.promotion, files)  # fmt: skip


# --- data --------------------------------------------------------------------------------
def ensure_campaign(
    data_dir: Path, flights: tuple[str, ...], scale: str, say: Callable[[str], None] = print
) -> list[str]:
    """Generate the synthetic flights missing from data_dir (first use); returns those made.

    Flights already present are reused as they are, whatever generated them. `say` shows a
    line to the user (cloudml run: on screen while the rest goes to the log).
    """
    from cloudml.data import synth

    frame = synth.LOCAL_FRAME if scale == "local" else synth.parse_frame_size("full")
    marker = data_dir / CAMPAIGN_MARKER
    if marker.is_file():
        made = json.loads(marker.read_text())
        if made.get("generator") == "cloudml.data.synth" and made.get("frame_size") != list(frame):
            say(
                f"[cloudml] warning: {data_dir} holds a synthetic campaign of "
                f"{made.get('frame_size')} frames, this version generates {list(frame)}; "
                f"reusing it (delete {data_dir} to regenerate)"
            )
    missing = [f for f in flights if not (data_dir / f).is_dir()]
    if missing:
        say(
            f"[cloudml] generating synthetic flights {', '.join(missing)} into {data_dir} (first use)"
        )
        synth.write_campaign(data_dir, seed=0, frame_size=frame, flights=tuple(missing))
        known = json.loads(marker.read_text()).get("flights", []) if marker.is_file() else []
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps({
                "source": "synthetic campaign", "generator": "cloudml.data.synth", "seed": 0,
                "frame_size": list(frame), "flights": sorted(set(known) | set(missing)),
            }, indent=2))  # fmt: skip
    return missing


# --- the run -------------------------------------------------------------------------------
def source_commit(repo: Path | None = None) -> str | None:
    """The git commit of the code this run executes ("<sha>" or "<sha>+dirty" when tracked
    files differ from it), or None outside a git checkout or without git."""
    import subprocess

    repo = repo or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "-uno"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty.strip() else sha or None


def pipeline_arguments(
    cfg: Config,
    raw_uri: str,
    threshold: float,
    min_std_ratio: float,
    beat_baseline: bool = DEFAULT_BEAT_BASELINE,
    skill_margin: float = DEFAULT_SKILL_MARGIN,
) -> dict[str, Any]:
    """Every pipeline parameter's value for this run (config keys + gate + raw_uri); keys
    with one implemented value (optimizer, scheduler) are not parameters."""
    keys = pipeline_keys()
    return {
        **{k: v for k, v in cfg.flat().items() if k in keys},
        "raw_uri": raw_uri,
        "threshold": threshold,
        "min_std_ratio": min_std_ratio,
        "beat_baseline": beat_baseline,
        "skill_margin": skill_margin,
    }


def _failed_task(message: str) -> str:
    """The innermost failed task named in kfp.local's failure message."""
    found = re.findall(r"Inner task failed: \S*?'([\w-]+)'", message) or re.findall(
        r"'([\w-]+)'", message
    )
    return found[0] if found else "?"


def find_outputs(root: Path) -> dict[str, Path]:
    """Outputs of one local run: evaluation, the shipped model (the ensemble), promote's result."""
    runs = sorted(p for p in root.iterdir() if p.is_dir())
    if not runs:
        raise CloudMLError(f"{root}: the local runner left no run directory")
    run = runs[-1]
    out = {
        "evaluation": run / "evaluate" / "evaluation",
        "model": run / "evaluate" / "model",
    }
    out["promote"] = run / "promote" / "executor_output.json"
    return {k: v for k, v in out.items() if v.exists()}


def promoted(outputs: dict[str, Path]) -> bool:
    """Whether the promote task made this run's model the champion (False if it did not run)."""
    path = outputs.get("promote")
    if path is None:
        return False
    return bool(json.loads(path.read_text()).get("parameterValues", {}).get("Output", False))


def collect_run(outputs: dict[str, Path], run_dir: Path, record: dict[str, Any]) -> None:
    """Copy the run's files into run_dir and write metrics.json (atomically, last)."""
    ev = outputs["evaluation"]
    for name in RUN_FILES:
        if (ev / name).is_file():
            _copy(ev / name, run_dir / name)
    model = outputs.get("model")
    if model is not None and model.is_dir():  # the ensemble: ensemble.json + member-<i>.pt
        _copy(model, run_dir / "model")
    with atomic_path(run_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    for p in run_dir.rglob("*"):  # atomic_path's temp files are 0600; these are for reading
        if p.is_file():
            p.chmod(0o644)


def promotion_text(
    pipeline: str,
    gate_passed: bool,
    promote_ran: bool,
    promoted: bool,
    r2: float,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> str:
    """The promotion outcome of a local run, from the champion pointer read before and after."""
    from cloudml.store.promotion import outcome_message

    if not gate_passed:
        return "not attempted: only a run that passes the gate may be promoted"
    if not promote_ran:
        return "unknown: the promote task left no result"
    run_id = after["run_id"] if promoted and after else ""
    who = f"this run (job id {run_id})" if run_id else "this run"
    return outcome_message(pipeline, run_id, r2, promoted, before, after, who=who)


def _champion(pipeline: str) -> dict[str, Any] | None:
    """The store's champion pointer for `pipeline`, or None (none yet, or unreadable: the
    ending then says less, the run is not failed for it)."""
    from cloudml.store.backends import open_store
    from cloudml.store.promotion import read_champion

    try:
        return read_champion(open_store(), pipeline)
    except CloudMLError as e:
        log.warning("champion pointer of %s not read: %s", pipeline, e)
        return None


def run_environment(func: Callable[..., Any]) -> Callable[..., Any]:
    """For the duration of a local run, the environment its tasks inherit: CLOUDML_STORE (a
    directory store under work_dir, unless one is configured: stage state and the local
    champion live there) and CLOUDML_COMMIT (the source commit evaluate records in
    metrics.json, the report and the card). Restored afterwards, so one run's store never
    becomes the next run's default in the same process."""
    import functools
    import inspect

    sig = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        work_dir = sig.bind(*args, **kwargs).arguments.get(
            "work_dir", sig.parameters["work_dir"].default
        )
        saved = {k: os.environ.get(k) for k in ("CLOUDML_STORE", "CLOUDML_COMMIT")}
        os.environ.setdefault("CLOUDML_STORE", str(Path(work_dir, "store").resolve()))
        commit = source_commit()
        if commit:
            os.environ.setdefault("CLOUDML_COMMIT", commit)
        try:
            return func(*args, **kwargs)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    return wrapper


def _run_config(preset: str, overrides: list[str] | None, scale: str) -> Config:
    """The validated config of a local run: the preset, --set overrides, scale (default)."""
    values = parse_overrides(overrides)
    values.setdefault("scale", scale)
    return load_config(preset, values)


def _new_run(kind: str, runs_dir: Path, work_dir: Path) -> tuple[str, Path, Path, Path]:
    """(name, run folder, pipeline root, log path) of a new run <kind>-<UTC stamp>; the run
    folder must not exist yet."""
    name = f"{kind}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}"
    run_dir, root = Path(runs_dir) / name, Path(work_dir) / name
    run_dir.mkdir(parents=True, exist_ok=False)
    root.mkdir(parents=True, exist_ok=True)
    return name, run_dir, root, run_dir / "pipeline.log"


@run_environment
def run_local(
    pipeline: str = "tuned",
    overrides: list[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_std_ratio: float = DEFAULT_MIN_STD_RATIO,
    data_dir: Path = Path("data/raw"),
    runs_dir: Path = Path("runs"),
    scale: str = "local",
    work_dir: Path = Path("build/kfp-local"),
    beat_baseline: bool = DEFAULT_BEAT_BASELINE,
    skill_margin: float = DEFAULT_SKILL_MARGIN,
    verbose: bool = False,
    cache: bool = False,
    runner: str = "subprocess",
) -> LocalRunResult:
    """Run the pipeline locally; returns the result (gate verdict included, never raises on
    a failed gate). Other task failures raise CloudMLError naming the task and the log.

    The screen (sys.stdout as it is on entry) gets the stage lines; everything else printed
    meanwhile, by the local runner and its tasks, goes to <run folder>/pipeline.log.

    `cache`: kfp.local's task cache (keyed on component, command, arguments and env; an
    artifact argument by its URI, so a task whose inputs came from cache hits hits too). Its
    key cannot see the cloudml code the components call, so the cache lives under
    work_dir/kfp-cache/<code fingerprint>: changed code starts an empty one."""
    from cloudml.steps.training import member_seeds

    if is_experiment(pipeline):
        raise CloudMLError(f"{pipeline}: an experiment, run it with run_experiment_local")
    cfg = _run_config(pipeline, overrides, scale)  # every problem listed before anything runs
    data_dir = Path(data_dir).resolve()
    name, run_dir, root, log_path = _new_run(pipeline, runs_dir, work_dir)

    arguments = pipeline_arguments(
        cfg, str(data_dir), threshold, min_std_ratio, beat_baseline, skill_margin
    )
    screen = sys.stdout
    k = cfg.train.ensemble_size
    screen.write(
        f"cloudml run: pipeline cloudml-{pipeline} on KFP's local runner, scale "
        f"{cfg.data.scale}, {len(cfg.data.flights)} flights, "
        f"{'a single model' if k == 1 else f'an ensemble of {k} members'}\n"
        f"the runner's own output goes to {log_path} (cloudml run -v also shows it here)\n"
    )
    screen.flush()
    with log_path.open("a", encoding="utf-8") as log_file:
        console = Console(screen, log_file, log_path=log_path, flights=len(cfg.data.flights),
                          seeds=member_seeds(cfg.train.seed, k), verbose=verbose)  # fmt: skip
        with capture(console):
            t0 = time.perf_counter()
            ensure_campaign(data_dir, cfg.data.flights, cfg.data.scale, say=console.say)
            before = _champion(pipeline)
            failed = _execute(
                pipeline, root, arguments, _cache_root(work_dir) if cache else None, runner
            )
            if failed is not None:
                console.task_failed(failed)
            outputs = find_outputs(root)
            if "evaluation" not in outputs:
                raise CloudMLError(
                    f"local run {name}: task '{failed}' failed before evaluation; its output "
                    f"is in {log_path} (artifacts under {root})"
                )
            ev = outputs["evaluation"]
            metrics = json.loads((ev / "metrics.json").read_text())
            stages = (
                json.loads((ev / "stages.json").read_text())
                if (ev / "stages.json").is_file()
                else {}
            )
            stages["total"] = time.perf_counter() - t0
            verdict = verdict_from_metrics(metrics, threshold, min_std_ratio,
                                           cfg.data.validation_flight, beat_baseline=beat_baseline,
                                           skill_margin=skill_margin)  # fmt: skip
            _check_failures(name, root, failed, verdict, log_path)
            was_promoted = promoted(outputs)
            promotion = promotion_text(
                pipeline, verdict.passed, "promote" in outputs, was_promoted,
                float(metrics.get("r2", float("nan"))), before, _champion(pipeline),
            )  # fmt: skip
            record = {
                **{k: metrics[k] for k in METRIC_KEYS if k in metrics},
                "flight": verdict.flight,
                "gate_passed": verdict.passed,
                "threshold": threshold,
                "min_std_ratio": min_std_ratio,
                "beat_baseline": beat_baseline,
                "skill_margin": skill_margin,
                "gate_within_noise": verdict.within_noise,
                "members": metrics.get("members", []),
                "promoted": was_promoted,
                "promotion": promotion,
                "seconds": stages,
                **{f"{k}_seconds": v for k, v in stages.items()},
                "pipeline": pipeline,
                "config": cfg.flat(),
                "store": _store_location(name, pipeline),
            }
            collect_run(outputs, run_dir, record)
            _upload_run(run_dir, pipeline, name)
    return LocalRunResult(
        run_dir, metrics, verdict.passed, verdict.message, stages, dict(console.spans),
        promotion, verdict.flight, log_path, record["store"],
    )  # fmt: skip


def _cache_root(work_dir: Path) -> Path:
    """kfp.local's cache for this code: work_dir/kfp-cache/<code fingerprint, 16 hex>."""
    from cloudml.steps.common import code_fingerprint

    return Path(work_dir).resolve() / "kfp-cache" / code_fingerprint()[:16]


def _execute(
    pipeline: str,
    root: Path,
    arguments: dict[str, Any],
    cache_root: Path | None = None,
    runner: str = "subprocess",
) -> str | None:
    """Run the pipeline graph (no retries) on kfp.local with artifacts under `root` (and
    kfp.local's task cache in `cache_root`, when given): every task in this venv
    (SubprocessRunner), or with runner="container" in the local images under the restricted
    settings (cloudml/cluster/container_run.py). Returns the failed task's name, or None."""
    import contextlib

    from kfp import local

    from pipelines.training import build_pipeline

    # one member at a time: each already uses every core (kfp.local runs ParallelFor
    # iterations concurrently up to the parallelism limit; 3 x 2 threads on 2 cores thrash)
    graph = build_pipeline(pipeline, retries=False, parallelism=1)
    root = Path(root).resolve()  # DockerRunner mounts the pipeline root at its own path
    with contextlib.ExitStack() as stack:
        if runner == "container":
            from cloudml.cluster.container_run import container_session, use_local_images
            from cloudml.store.layout import is_remote

            store = os.environ["CLOUDML_STORE"]
            kfp_runner = stack.enter_context(container_session(
                root, read_only=[Path(arguments["raw_uri"])],
                writable=[] if is_remote(store) else [Path(store)],
            ))  # fmt: skip
            use_local_images(graph)
        else:
            kfp_runner = local.SubprocessRunner(use_venv=False)
        local.init(kfp_runner, pipeline_root=str(root),
                   raise_on_error=True, enable_caching=cache_root is not None,
                   cache_root=str(cache_root) if cache_root else None)  # fmt: skip
        failed: str | None = None
        # KFP's local runner swaps builtins.print for an indenting wrapper while a task runs
        # (kfp.local.logging_utils.indented_print) and, when a task fails with raise_on_error,
        # leaves it installed: every later print of this process came out indented (found
        # by tests/test_preflight.py parsing a report after the gate-failure test). Put it
        # back.
        real_print = builtins.print
        try:
            graph(**arguments)
        except RuntimeError as e:
            failed = _failed_task(str(e))
        finally:
            builtins.print = real_print
    return failed


def _check_failures(
    name: str, root: Path, failed: str | None, verdict: GateVerdict, log_path: Path
) -> None:
    """Raise CloudMLError unless the run's only failed task, if any, is a gate that the
    metrics fail too (a gate task that disagrees with the metrics is a bug to report)."""
    if failed not in (None, "gate"):
        raise CloudMLError(
            f"local run {name}: task '{failed}' failed; its output is in {log_path} "
            f"(artifacts under {root})"
        )
    if (failed == "gate") == verdict.passed:
        raise CloudMLError(
            f"local run {name}: the gate task {'failed' if failed else 'passed'} but the "
            f"metrics say {verdict.message}"
        )


def _store_location(run_name: str, pipeline: str) -> str:
    """Where the run folder is mirrored: <CLOUDML_STORE>/runs/<pipeline>/<run name>."""
    from cloudml.store.layout import run_prefix

    return f"{os.environ['CLOUDML_STORE'].rstrip('/')}/{run_prefix(pipeline, run_name)}"


def _upload_run(run_dir: Path, pipeline: str, run_name: str) -> None:
    """Mirror the run folder into the store with a sha256 manifest written last (a prefix
    with a manifest is complete). The local folder stays whatever happens."""
    from cloudml.store.backends import open_store
    from cloudml.store.layout import run_prefix
    from cloudml.store.manifest import upload_dir

    prefix = run_prefix(pipeline, run_name)
    upload_dir(open_store(), run_dir, prefix)


# --- experiments (sweep, lofo) ---------------------------------------------------------------
EXPERIMENT_FILES = {
    "sweep": ("compare-variants", "comparison"),
    "sweep-lofo": ("compare-variants", "comparison"),
    "lofo": ("lofo-report", "lofo"),
}


@dataclass
class ExperimentResult:
    run_dir: Path
    kind: str
    rows: list[dict[str, Any]]
    passed: bool
    verdict: str
    promotion: str = ""
    seconds: float = float("nan")
    log_path: Path | None = None

    def ending(self) -> str:
        """The table, the verdict, the files; the last line is "run folder  <path>"."""
        from cloudml.experiments import tables

        cols = {"sweep": tables.SWEEP_TEXT, "sweep-lofo": tables.SWEEP_LOFO_TEXT}.get(
            self.kind, tables.LOFO_TEXT
        )
        lines = [f"{self.kind}: {len(self.rows)} {'variants' if is_sweep(self.kind) else 'folds'}"
                 f" in {self.seconds:.0f} s", *tables.text_table(self.rows, cols), "",
                 self.verdict]  # fmt: skip
        if self.promotion:
            lines.append(f"promotion: {self.promotion}")
        name = EXPERIMENT_FILES[self.kind][1]
        for label, f in (("report", f"{name}.html"), ("table", f"{name}.csv")):
            lines.append(f"  {label:<11}{self.run_dir / f}")
        if self.log_path is not None:
            lines.append(f"  {'log':<11}{self.log_path}")
        lines.append(f"run folder  {self.run_dir}")
        return "\n".join(lines)


def _task_dir(run_root: Path, task: str) -> Path | None:
    """The (only) output folder of `task` in a local run, wherever the loops nest it."""
    found = sorted(p for p in run_root.rglob(task) if p.is_dir())
    return found[0] if found else None


@run_environment
def run_experiment_local(
    kind: str,
    overrides: list[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_std_ratio: float = DEFAULT_MIN_STD_RATIO,
    data_dir: Path = Path("data/raw"),
    runs_dir: Path = Path("runs"),
    scale: str = "local",
    work_dir: Path = Path("build/kfp-local"),
    beat_baseline: bool = DEFAULT_BEAT_BASELINE,
    skill_margin: float = DEFAULT_SKILL_MARGIN,
    verbose: bool = False,
    cache: bool = False,
    variants_file: Path | None = None,
    gate_mean: bool = False,
) -> ExperimentResult:
    """The sweep or leave-one-flight-out pipeline on the local runner (one model at a time;
    --set changes the base preset tuned). The run folder runs/<kind>-<stamp>/ gets the
    table (HTML, CSV, JSON), metrics.json and, for the sweep, the winner's model."""
    from cloudml.experiments.folds import fold_configs, training_fold_configs
    from cloudml.experiments.variants import load_variants, variant_configs

    cfg = _run_config(BASE_PRESET, overrides, scale)
    extra: dict[str, Any]
    models = 1  # models trained per variant / fold
    if is_sweep(kind):  # every variant (and its folds) checked before anything runs
        variants = load_variants(variants_file)
        configs = variant_configs(cfg.to_json(), variants)
        if ranked_on(kind) == "lofo":  # the variants share flights, so their fold counts
            models = 1 + max(len(training_fold_configs(c)) for c in configs)
        extra = {"variants": variants}
    else:
        fold_configs(cfg.to_json())
        extra = {"gate_mean": gate_mean}
    data_dir = Path(data_dir).resolve()
    name, run_dir, root, log_path = _new_run(kind, runs_dir, work_dir)
    arguments = {**pipeline_arguments(cfg, str(data_dir), threshold, min_std_ratio,
                                      beat_baseline, skill_margin), **extra}  # fmt: skip
    n = len(extra["variants"]) if is_sweep(kind) else len(cfg.data.flights)
    each = (f" (each: 1 model + {models - 1} folds over its training flights, ranked on "
            "their mean R²)" if models > 1 else "")  # fmt: skip
    screen = sys.stdout
    screen.write(
        f"cloudml run: pipeline cloudml-{kind} on KFP's local runner, {n} "
        f"{'variants' if is_sweep(kind) else 'folds'} of preset {BASE_PRESET}{each}, one model "
        f"at a time\nthe runner's own output goes to {log_path}\n"
    )
    screen.flush()
    task, table = EXPERIMENT_FILES[kind]
    with log_path.open("a", encoding="utf-8") as log_file:
        from cloudml.steps.training import member_seeds

        console = Console(screen, log_file, log_path=log_path, flights=len(cfg.data.flights),
                          seeds=member_seeds(cfg.train.seed, cfg.train.ensemble_size),
                          models=n * models, verbose=verbose)  # fmt: skip
        with capture(console):
            t0 = time.perf_counter()
            ensure_campaign(data_dir, cfg.data.flights, cfg.data.scale, say=console.say)
            before = _champion("sweep") if is_sweep(kind) else None
            failed = _execute(kind, root, arguments, _cache_root(work_dir) if cache else None)
            if failed is not None:
                console.task_failed(failed)
            runs = sorted(p for p in root.iterdir() if p.is_dir())
            out = _task_dir(runs[-1], task) if runs else None
            if out is None or not (out / "table" / f"{table}.json").is_file():
                raise CloudMLError(
                    f"local run {name}: task '{failed}' failed before the {task} table; its "
                    f"output is in {log_path} (artifacts under {root})"
                )
            rows = json.loads((out / "table" / f"{table}.json").read_text())
            for f in sorted((out / "table").iterdir()):
                _copy(f, run_dir / f.name)
            _copy(out / "report", run_dir / f"{table}.html")
            record: dict[str, Any] = {"pipeline": kind, "base_preset": BASE_PRESET,
                                      "rows": rows, "config": cfg.flat()}  # fmt: skip
            promotion = ""
            if is_sweep(kind):
                passed, verdict, promotion = _sweep_outcome(
                    name, runs[-1], failed, rows, record, before, log_path, root, run_dir
                )
            else:
                summary = json.loads((out / "table" / "lofo_summary.json").read_text())
                verdict, passed = summary["verdict"], failed is None
                if failed not in (None, task):
                    raise CloudMLError(f"local run {name}: task '{failed}' failed; see {log_path}")
                record["summary"] = summary
            record.update({"gate_passed": passed, "verdict": verdict, "promotion": promotion,
                           "total_seconds": time.perf_counter() - t0})  # fmt: skip
            with atomic_path(run_dir / "metrics.json") as tmp:
                tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
            for p in run_dir.rglob("*"):
                if p.is_file():
                    p.chmod(0o644)
            _upload_run(run_dir, kind, name)
    return ExperimentResult(run_dir, kind, rows, passed, verdict, promotion,
                            record["total_seconds"], log_path)  # fmt: skip


def _copy(src: Path, dest: Path) -> None:
    """src (a file, or a directory's files, recursively) onto dest, each file atomically."""
    from cloudml.steps.common import copy_file

    if src.is_dir():
        for f in sorted(src.iterdir()):
            _copy(f, dest / f.name)
    elif src.is_file():
        copy_file(src, dest)


def _sweep_outcome(
    name: str,
    run_root: Path,
    failed: str | None,
    rows: list[dict[str, Any]],
    record: dict[str, Any],
    before: dict[str, Any] | None,
    log_path: Path,
    root: Path,
    run_dir: Path,
) -> tuple[bool, str, str]:
    """The winner's gate verdict (from pick-winner's figures) and promotion; the winner's
    model is copied to run_dir/model."""  # fmt: skip
    win = _task_dir(run_root, "pick-winner")
    if win is None or not (win / "executor_output.json").is_file():
        raise CloudMLError(f"local run {name}: pick-winner did not run; see {log_path}")
    got = json.loads((win / "executor_output.json").read_text()).get("parameterValues", {})
    winner = next(r for r in rows if r["winner"])
    _check_experiment_failure(name, failed, log_path, root)
    passed = failed != "gate"
    _copy(win / "model", run_dir / "model")
    promote_dir = _task_dir(run_root, "promote")
    was = bool(
        promote_dir is not None and (promote_dir / "executor_output.json").is_file()
        and json.loads((promote_dir / "executor_output.json").read_text())
        .get("parameterValues", {}).get("Output", False)
    )  # fmt: skip
    text = promotion_text("sweep", passed, promote_dir is not None, was, float(got["r2"]),
                          before, _champion("sweep"))  # fmt: skip
    ranked = (f"leave-one-training-flight-out R² {winner['lofo_r2']:.4f}"
              if winner.get("ranked_on") == "lofo"
              else f"selection-split R² {winner['selection_r2']:.4f}")  # fmt: skip
    line = (f"winner {winner['variant']} (ranked on {ranked}): validation R² {got['r2']:.4f} "
            f"[95% {got['r2_lo']:.4f}, {got['r2_hi']:.4f}], gate "
            f"{'PASSED' if passed else 'FAILED'}")  # fmt: skip
    record.update({"winner": winner["variant"], "winner_gate_inputs": got, "promoted": was})
    return passed, line, text


def _check_experiment_failure(name: str, failed: str | None, log_path: Path, root: Path) -> None:
    if failed not in (None, "gate"):
        raise CloudMLError(
            f"local run {name}: task '{failed}' failed; its output is in {log_path} "
            f"(artifacts under {root})"
        )


# --- CLI -----------------------------------------------------------------------------------
def _cmd_run(args: argparse.Namespace) -> int:
    check_output_dir(args.runs_dir)
    if is_experiment(args.preset):
        if args.runner != "subprocess":
            raise CloudMLError("--runner container: only for the training pipelines, not "
                               f"--pipeline {args.preset}")  # fmt: skip
        res = run_experiment_local(
            args.preset, overrides=args.overrides, threshold=args.threshold,
            min_std_ratio=args.min_std_ratio, data_dir=args.data_dir, runs_dir=args.runs_dir,
            scale=args.scale, beat_baseline=args.beat_baseline, skill_margin=args.skill_margin,
            verbose=getattr(args, "verbose", False), cache=args.cache,
            variants_file=args.variants, gate_mean=args.gate_mean,
        )  # fmt: skip
        print(res.ending())
        return 0 if res.passed else GateFailed.exit_code
    if args.variants is not None or args.gate_mean:
        raise CloudMLError(
            "--variants / --gate-mean: only with --pipeline sweep, sweep-lofo / lofo"
        )
    res = run_local(
        pipeline=args.preset,
        overrides=args.overrides,
        threshold=args.threshold,
        min_std_ratio=args.min_std_ratio,
        data_dir=args.data_dir,
        runs_dir=args.runs_dir,
        scale=args.scale,
        beat_baseline=args.beat_baseline,
        skill_margin=args.skill_margin,
        verbose=getattr(args, "verbose", False),
        cache=args.cache,
        runner=args.runner,
    )
    print(res.ending())
    return 0 if res.gate_passed else GateFailed.exit_code


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a pipeline on KFP's local runner (embedded default)")
    add_config_args(p, names_only=True)  # --preset (alias --pipeline), --set
    p.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD, help="gate: R² must exceed it"
    )
    p.add_argument("--min-std-ratio", type=float, default=DEFAULT_MIN_STD_RATIO,
                   help="gate: collapse check, prediction/target std ratio (0 disables)")  # fmt: skip
    p.add_argument("--skill-margin", type=float, default=DEFAULT_SKILL_MARGIN,
                   help="gate: R² must beat the ridge baseline's by more than this")  # fmt: skip
    p.add_argument("--runner", choices=("subprocess", "container"), default="subprocess",
                   help="subprocess: every task in this venv (default); container: every task "
                   "in the local CPU image under the restricted settings (podman; the image is "
                   "built or reused first: docs/deploy.md)")  # fmt: skip
    p.add_argument("--cache", action="store_true",
                   help="reuse tasks of an earlier local run whose inputs, config and cloudml "
                   "code are unchanged (kfp.local's cache; training included)")  # fmt: skip
    p.add_argument("--no-baseline", dest="beat_baseline", action="store_false",
                   help="gate: do not require beating the ridge baseline")  # fmt: skip
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data/raw"),
        help="raw flights (generated on first use)",
    )
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="where the run folder runs/<preset>-<UTC stamp>/ is written")  # fmt: skip
    p.add_argument("--scale", choices=("local", "full"), default="local",
                   help="local: frames binned down for a CPU (default); full: as recorded")  # fmt: skip
    p.add_argument("--variants", type=Path, default=None, metavar="FILE",
                   help="--pipeline sweep or sweep-lofo: a YAML list of {name, overrides} (default: tuned and "
                   "the seed's five alternatives, cloudml/experiments/sweep_variants.yaml)")  # fmt: skip
    p.add_argument("--gate-mean", action="store_true",
                   help="--pipeline lofo: fail unless the mean R² over the folds > --threshold")  # fmt: skip
    p.set_defaults(func=_cmd_run)
