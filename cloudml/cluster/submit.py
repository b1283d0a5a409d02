"""compile / submit / schedule the training pipeline over kfp.Client (KFP v2beta1 API).

    cloudml compile  --pipeline tuned --out build/pipelines/tuned.yaml
    cloudml submit   --pipeline tuned [--set key=value ...] [--threshold X]
    cloudml schedule --pipeline tuned --cron '0 0 6 * * 1'

submit/schedule compile the preset, upload it as a new version of pipeline `cloudml-<preset>`
(creating the pipeline if absent) and start a run / a recurring run in experiment `cloudml`
on $KFP_HOST. Auth: $KFP_TOKEN as a bearer token when set, else kfp.Client's defaults.
Every failure to reach or satisfy the API becomes a KfpError naming the host.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cloudml import __version__
from cloudml.cluster import settings as platform
from cloudml.config import load_config, parse_overrides, pipeline_keys
from cloudml.config_cli import add_config_args
from cloudml.errors import CloudMLError, ConfigError
from cloudml.experiments import base_preset
from cloudml.fileio import check_output_file
from pipelines.training import compile_pipeline, pipeline_name

log = logging.getLogger(__name__)

EXPERIMENT = "cloudml"
T = TypeVar("T")


class KfpError(CloudMLError):
    """The Kubeflow Pipelines endpoint is missing, unreachable or rejected a request."""


# --- pure request builders -----------------------------------------------------------------
_CRON_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_CRON_NAMES = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_CRON_TOKEN = re.compile(r"^(\*|\?|\d+(-\d+)?)(/\d+)?$")


def validate_cron(expr: str) -> str:
    """Check a six-field cron expression (seconds first, UTC, as KFP's scheduler reads it).

    Fields accept *, ?, numbers, ranges a-b, lists a,b and steps x/n, each within its range.
    Returns the expression with whitespace normalised; raises ConfigError listing problems.
    """
    fields = expr.split()
    if len(fields) != 6:
        raise ConfigError(
            f"cron {expr!r}: expected six fields (second minute hour day-of-month month "
            f"day-of-week, UTC), got {len(fields)}; e.g. '0 0 6 * * 1' = Mondays 06:00 UTC"
        )
    problems = []
    for value, (lo, hi), name in zip(fields, _CRON_RANGES, _CRON_NAMES, strict=True):
        for part in value.split(","):
            m = _CRON_TOKEN.match(part)
            if not m:
                problems.append(f"{name} field {value!r}: cannot parse {part!r}")
                continue
            nums = [int(n) for n in re.findall(r"\d+", m.group(1))]
            if any(not lo <= n <= hi for n in nums):
                problems.append(f"{name} field {value!r}: values must lie in {lo}-{hi}")
            if len(nums) == 2 and nums[0] > nums[1]:
                problems.append(f"{name} field {value!r}: range {part!r} runs backwards")
            if m.group(3) and int(m.group(3)[1:]) == 0:
                problems.append(f"{name} field {value!r}: step must be >= 1")
    if problems:
        raise ConfigError(f"cron {expr!r}: " + "; ".join(problems))
    return " ".join(fields)


def run_parameters(
    preset: str,
    overrides: list[str] | None = None,
    threshold: float | None = None,
    variants_file: Path | None = None,
) -> dict[str, Any]:
    """The run's parameter values: the --set overrides (validated against the preset, typed
    as the pipeline declares them) plus the threshold when given, and for the sweep the
    variants of `variants_file` (each checked). Others keep the compiled defaults, which are
    the preset's values."""
    extra = parse_overrides(overrides)
    # an experiment (sweep, lofo): the overrides change its base preset, tuned
    flat = load_config(base_preset(preset), extra).flat()  # ConfigError on any bad key/value
    # keys with one implemented value (optimizer, scheduler) are validated but are not
    # pipeline parameters: the compiled default is that value
    params: dict[str, Any] = {k: flat[k] for k in extra if k in pipeline_keys()}
    if threshold is not None:
        params["threshold"] = float(threshold)
    if variants_file is not None:
        from cloudml.experiments import is_sweep
        from cloudml.experiments.variants import load_variants, variant_configs

        if not is_sweep(preset):
            raise ConfigError(
                f"--variants: only the sweep pipelines (sweep, sweep-lofo) take variants, not {preset}"
            )
        params["variants"] = load_variants(variants_file)
        variant_configs(load_config(base_preset(preset), extra).to_json(), params["variants"])
    return params


def version_name(preset: str, now: dt.datetime | None = None) -> str:
    """Unique, sortable pipeline version name: cloudml-tuned-0.1.0-20261124T001500Z."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{pipeline_name(preset)}-{__version__}-{now.strftime('%Y%m%dT%H%M%SZ')}"


def display_name_filter(name: str) -> str:
    """A v2beta1 list filter selecting display_name == name."""
    return json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]}
    )


# --- talking to the API server -------------------------------------------------------------
def kfp_host() -> str:
    host = os.environ.get("KFP_HOST", "").strip().rstrip("/")
    if not host:
        raise KfpError(
            "KFP_HOST is not set: export KFP_HOST=https://<kubeflow-host>/pipeline "
            "(or http://localhost:8888 after `kubectl port-forward svc/ml-pipeline-ui 8888:80 "
            "-n kubeflow`)"
        )
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


def _probe(host: str, token: str | None, timeout: float = 10.0) -> None:
    """GET <host>/apis/v2beta1/healthz once, so a dead endpoint fails in seconds with its
    name (kfp.Client itself retries healthz five times with 5 s sleeps)."""
    req = urllib.request.Request(f"{host}/apis/v2beta1/healthz")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    # no proxies from the environment: kfp.Client's own HTTP client ignores them too
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        raise KfpError(
            f"KFP endpoint {host} rejected the health check: HTTP {e.code} {e.reason}"
            + (" (check KFP_TOKEN)" if e.code in (401, 403) else "")
        ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise KfpError(f"KFP endpoint {host} is unreachable: {reason}") from None


def connect(host: str | None = None):
    """A kfp.Client for $KFP_HOST (bearer token from $KFP_TOKEN), after a quick health probe."""
    import kfp

    host = host or kfp_host()
    token = os.environ.get("KFP_TOKEN") or None
    _probe(host, token)
    try:
        return kfp.Client(
            host=host, existing_token=token, namespace=os.environ.get("KFP_NAMESPACE", "kubeflow")
        )
    except Exception as e:  # noqa: BLE001 - any client-construction failure is the endpoint's
        raise KfpError(f"KFP endpoint {host}: could not create a client: {e}") from None


def _call(host: str, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one API call; API/network errors become KfpError naming host and request."""
    from kfp_server_api.exceptions import ApiException

    try:
        return fn(*args, **kwargs)
    except ApiException as e:
        body = (e.body or "").strip() if isinstance(e.body, str) else e.body
        raise KfpError(
            f"KFP endpoint {host} rejected {what}: HTTP {e.status} {e.reason} {body}"
        ) from None
    except (OSError, TimeoutError) as e:
        raise KfpError(f"KFP endpoint {host} failed during {what}: {e}") from None
    except ValueError as e:  # kfp.Client raises ValueError for e.g. duplicate names
        raise KfpError(f"KFP endpoint {host}: {what}: {e}") from None


def upload_version(client, host: str, preset: str, package: Path) -> tuple[str, str]:
    """Upload `package` as a new version of pipeline cloudml-<preset>; (pipeline_id, version_id)."""
    name = pipeline_name(preset)
    pid = _call(host, f"lookup of pipeline {name}", client.get_pipeline_id, name)
    if pid is None:
        created = _call(
            host,
            f"upload of new pipeline {name}",
            client.upload_pipeline,
            str(package),
            pipeline_name=name,
            description=f"CloudML CBH training, preset {preset}"
            if preset == base_preset(preset)
            else f"CloudML CBH experiment {preset} (base preset {base_preset(preset)})",
        )
        pid = created.pipeline_id
        versions = _call(
            host,
            f"listing versions of {name}",
            client.list_pipeline_versions,
            pid,
            sort_by="created_at desc",
            page_size=1,
        )
        if not versions.pipeline_versions:
            raise KfpError(f"KFP endpoint {host}: pipeline {name} was created without a version")
        return pid, versions.pipeline_versions[0].pipeline_version_id
    version = _call(
        host,
        f"upload of a version of {name}",
        client.upload_pipeline_version,
        str(package),
        version_name(preset),
        pipeline_id=pid,
    )
    return pid, version.pipeline_version_id


def _experiment_id(client, host: str) -> str:
    exp = _call(
        host, f"get-or-create of experiment {EXPERIMENT}", client.create_experiment, EXPERIMENT
    )
    return exp.experiment_id


def ui_base(host: str) -> str:
    return (os.environ.get("KFP_UI_HOST") or host).rstrip("/")


def _prepare(
    preset: str,
    overrides: list[str] | None,
    threshold: float | None,
    build_dir: Path,
    variants_file: Path | None = None,
) -> tuple[dict[str, Any], str, Any, str, str, str]:
    """What submit and schedule share: validated run parameters, the endpoint, and the
    compiled pipeline uploaded as a new version in experiment `cloudml`.
    Returns (params, host, client, pipeline_id, version_id, experiment_id)."""
    params = run_parameters(preset, overrides, threshold, variants_file)
    host = kfp_host()
    package = compile_pipeline(preset, Path(build_dir) / f"{preset}.yaml")
    client = connect(host)
    pid, vid = upload_version(client, host, preset, package)
    return params, host, client, pid, vid, _experiment_id(client, host)


def submit(
    preset: str,
    overrides: list[str] | None = None,
    threshold: float | None = None,
    build_dir: Path = Path("build/pipelines"),
    variants_file: Path | None = None,
) -> dict[str, str]:
    """Compile, upload a new version, start a run; returns {run_id, link, pipeline_id, version_id}."""
    params, host, client, pid, vid, eid = _prepare(
        preset, overrides, threshold, build_dir, variants_file
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run = _call(
        host,
        "run creation",
        client.run_pipeline,
        eid,
        f"{pipeline_name(preset)}-{stamp}",
        params=params,
        pipeline_id=pid,
        version_id=vid,
        service_account=platform.SERVICE_ACCOUNT,
    )
    link = f"{ui_base(host)}/#/runs/details/{run.run_id}"
    return {"run_id": run.run_id, "link": link, "pipeline_id": pid, "version_id": vid}


def schedule(
    preset: str,
    cron: str,
    overrides: list[str] | None = None,
    threshold: float | None = None,
    build_dir: Path = Path("build/pipelines"),
) -> dict[str, Any]:
    """A recurring run `cloudml-<preset>-schedule` on `cron` (six fields, UTC), one at a time,
    no catch-up; an existing schedule of that name is deleted first (replaced)."""
    cron = validate_cron(cron)
    params, host, client, pid, vid, eid = _prepare(preset, overrides, threshold, build_dir)
    job = f"{pipeline_name(preset)}-schedule"
    existing = _call(
        host,
        "listing recurring runs",
        client.list_recurring_runs,
        experiment_id=eid,
        page_size=100,
        filter=display_name_filter(job),
    )
    replaced = [
        r.recurring_run_id for r in (existing.recurring_runs or []) if r.display_name == job
    ]
    for rid in replaced:
        _call(host, f"deletion of recurring run {rid}", client.delete_recurring_run, rid)
    rec = _call(
        host,
        "recurring run creation",
        client.create_recurring_run,
        eid,
        job,
        description=f"CloudML {preset} on cron '{cron}' (UTC)",
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=params,
        pipeline_id=pid,
        version_id=vid,
        enabled=True,
        service_account=platform.SERVICE_ACCOUNT,
    )
    link = f"{ui_base(host)}/#/recurringrun/details/{rec.recurring_run_id}"
    return {
        "recurring_run_id": rec.recurring_run_id,
        "link": link,
        "replaced": replaced,
        "cron": cron,
    }


# --- CLI -----------------------------------------------------------------------------------
def _add_common(p: argparse.ArgumentParser, overrides: bool = True) -> None:
    """--preset (alias --pipeline), a name only since it names the pipeline; --set where the
    command starts runs (compile has none: every key is a run parameter)."""
    add_config_args(p, names_only=True, overrides=overrides)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, default=None,
                   help="gate: the validation R² must exceed it (default 0.3)")  # fmt: skip


def _cmd_compile(args: argparse.Namespace) -> int:
    out = check_output_file(args.out or Path("build/pipelines") / f"{args.preset}.yaml")
    print(compile_pipeline(args.preset, out))
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    res = submit(args.preset, args.overrides, args.threshold, variants_file=args.variants)
    print(f"run {res['run_id']} started: {res['link']}")
    return 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    res = schedule(args.preset, args.cron, args.overrides, args.threshold)
    if res["replaced"]:
        print(f"replaced recurring run(s) {', '.join(res['replaced'])}")
    print(f"recurring run {res['recurring_run_id']} on '{res['cron']}' (UTC): {res['link']}")
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile a preset's pipeline to YAML")
    _add_common(p, overrides=False)
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="pipeline YAML to write (default build/pipelines/<preset>.yaml)")  # fmt: skip
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("submit", help="compile, upload and start a run on $KFP_HOST")
    _add_common(p)
    _add_run_args(p)
    p.add_argument("--variants", type=Path, default=None, metavar="FILE",
                   help="--pipeline sweep or sweep-lofo: the variants parameter from a YAML list of "
                   "{name, overrides} (default: the compiled default variants)")  # fmt: skip
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("schedule", help="recurring run on $KFP_HOST (six-field cron, UTC)")
    _add_common(p)
    _add_run_args(p)
    p.add_argument("--cron", required=True, help="six fields, seconds first, UTC: '0 0 6 * * 1'")
    p.set_defaults(func=_cmd_schedule)
