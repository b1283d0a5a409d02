"""Run every check over a manifests tree and print one PASS/FAIL line each: `main`.

python -m cloudml.cluster.manifests manifests
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudml.cluster.manifests.metric_names import (
    contract_metric_names,
    dashboard_exprs,
    dashboards,
    metric_problems,
    rule_groups,
)
from cloudml.cluster.manifests.platform_names import platform_problems, servicemonitor_problems
from cloudml.cluster.manifests.pod_security import pss_problems
from cloudml.cluster.manifests.tools import (
    K8S_VERSION,
    promtool_problems,
    render_overlay,
    stage_tree,
    validate_schemas,
)

CHECKS = ("render", "schema", "pss", "platform", "promtool", "metrics")


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: `PASS name` or `FAIL name: problems`."""

    name: str
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        if self.ok:
            return f"PASS  {self.name}"
        return f"FAIL  {self.name}:\n" + "\n".join(f"        - {p}" for p in self.problems)


def run_checks(root: Path, checks: Iterable[str] = CHECKS) -> list[CheckResult]:
    """Every check over manifests root `root`; `checks` picks a subset (tests use this)."""
    wanted = set(checks)
    root = Path(root)
    overlays = sorted(p.parent for p in root.glob("overlays/*/kustomization.yaml"))
    results: list[CheckResult] = []
    if not overlays:
        return [CheckResult(f"overlays in {root}", ("no overlays/*/kustomization.yaml",))]
    with tempfile.TemporaryDirectory(prefix="manifests-check-") as tmp:
        tmp_path = Path(tmp)
        notes = stage_tree(root, tmp_path / "tree")
        rendered: dict[str, list[dict[str, Any]]] = {}
        for overlay in overlays:
            name = overlay.relative_to(root).as_posix()
            try:
                rendered[name] = render_overlay(tmp_path / "tree" / name)
                results.append(CheckResult(f"render {name} ({len(rendered[name])} objects)"))
            except RuntimeError as e:
                results.append(CheckResult(f"render {name}", (str(e),)))
        for note in notes:
            print(f"note  {note}")
        per_overlay: list[tuple[str, Callable[[list[dict[str, Any]]], list[str]]]] = [
            ("pss", lambda docs: [p for d in docs for p in pss_problems(d)]),
            ("platform", lambda docs: platform_problems(docs) + servicemonitor_problems(docs)),
        ]
        for name, docs in rendered.items():
            if "schema" in wanted:
                work = tmp_path / f"schema-{name.replace('/', '-')}"
                work.mkdir()
                results.append(
                    CheckResult(
                        f"schema {name} (kubernetes-validate --strict -k {K8S_VERSION})",
                        tuple(validate_schemas(docs, work)),
                    )
                )
            for check, fn in per_overlay:
                if check in wanted:
                    results.append(CheckResult(f"{check} {name}", tuple(fn(docs))))
        if not rendered:
            return results
        # rules and dashboards come from the base; the first overlay that has them is enough
        docs = next(iter(rendered.values()))
        groups = rule_groups(docs)
        if "promtool" in wanted:
            work = tmp_path / "promtool"
            work.mkdir()
            problems = (
                promtool_problems(groups, root / "tests", work)
                if groups
                else ["no PrometheusRule rendered"]
            )
            results.append(CheckResult("promtool check + test rules", tuple(problems)))
        if "metrics" in wanted:
            results.append(metrics_result(groups, dashboards(docs)))
    return results


def metrics_result(groups: list[dict[str, Any]], boards: list[tuple[str, str]]) -> CheckResult:
    """Dashboards parse; every metric in dashboards and alerts is in the contract."""
    name = "dashboard JSON + metric names vs cloudml.cluster.telemetry.METRIC_NAMES"
    problems: list[str] = []
    exprs: list[tuple[str, str]] = []
    if not boards:
        problems.append("no Grafana dashboard ConfigMap (label grafana_dashboard)")
    for where, text in boards:
        try:
            board = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append(f"{where}: not valid JSON: {e}")
            continue
        found = dashboard_exprs(board)
        if not found:
            problems.append(f"{where}: no queries")
        exprs += [(where, e) for e in found]
    exprs += [
        (f"alert {r.get('alert') or r.get('record')}", str(r.get("expr", "")))
        for g in groups
        for r in g.get("rules") or []
    ]
    try:
        allowed = contract_metric_names()
    except ImportError as e:
        return CheckResult(
            name, (*problems, f"cannot import cloudml.cluster.telemetry.METRIC_NAMES: {e}")
        )
    return CheckResult(name, tuple(problems + metric_problems(exprs, allowed)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cloudml.cluster.manifests",
        description="Render and check every kustomize overlay under manifests/: `make manifests-check`.",
    )
    parser.add_argument(
        "root", type=Path, nargs="?", default=Path("manifests"), help="manifests directory"
    )
    parser.add_argument("--only", action="append", choices=CHECKS, help="run only these checks")
    args = parser.parse_args(argv)
    if not (args.root / "overlays").is_dir():
        print(
            f"error: {args.root}/overlays not found (expected the kustomize tree)", file=sys.stderr
        )
        return 2
    results = run_checks(args.root, args.only or CHECKS)
    for r in results:
        print(r.line())
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
