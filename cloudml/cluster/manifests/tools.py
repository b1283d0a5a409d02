"""The external tools: `kubectl kustomize` (render), `kubernetes-validate` (schemas) and
`promtool` (alert rules and their unit tests); each failure comes back as problem lines."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from cloudml.cluster.manifests.objects import is_builtin

K8S_VERSION = "1.30.0"


def find_tool(name: str) -> str | None:
    """A tool from the venv's bin (kubernetes-validate) or PATH (kubectl, promtool)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def stage_tree(root: Path, dest: Path) -> list[str]:
    """Copy manifests/ to dest; fill each missing `X.env` from `X.env.example`.

    Real credential files are git-ignored, so a fresh checkout lacks them; the check
    renders with the example instead (and says so) to test structure, not secrets.
    """
    shutil.copytree(root, dest)
    notes = []
    for example in sorted(dest.rglob("*.env.example")):
        env = example.with_suffix("")
        if not env.exists():
            shutil.copyfile(example, env)
            notes.append(f"{env.relative_to(dest)} missing: rendered with {example.name}")
    return notes


def render_overlay(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize PATH` -> objects. Raises RuntimeError with kubectl's message."""
    kubectl = find_tool("kubectl")
    if kubectl is None:
        raise RuntimeError("kubectl not found on PATH (needed for `kubectl kustomize`)")
    out = _run([kubectl, "kustomize", str(path)])
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or out.stdout.strip())
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate_schemas(docs: list[dict[str, Any]], workdir: Path) -> list[str]:
    """kubernetes-validate --strict on the built-in kinds; its ERROR lines as problems."""
    exe = find_tool("kubernetes-validate")
    if exe is None:
        return ["kubernetes-validate not installed (pip install kubernetes-validate)"]
    builtin = [d for d in docs if is_builtin(d)]
    path = workdir / "builtin.yaml"
    path.write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    out = _run([exe, "--strict", "-k", K8S_VERSION, "--quiet", str(path)])
    if out.returncode == 0:
        return []
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if "ERROR" in ln]
    return [ln.replace(str(path), "").strip() for ln in lines] or [out.stdout + out.stderr]


def promtool_problems(groups: list[dict[str, Any]], tests_dir: Path, workdir: Path) -> list[str]:
    """`promtool check rules` on the groups, then `promtool test rules` on tests_dir/*.yaml."""
    promtool = find_tool("promtool")
    if promtool is None:
        return ["promtool not found (Debian package prometheus)"]
    (workdir / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, allow_unicode=True))
    out = _run([promtool, "check", "rules", "rules.yaml"], cwd=workdir)
    if out.returncode != 0:
        return ["promtool check rules: " + (out.stdout + out.stderr).strip()]
    tests = sorted(tests_dir.glob("*.yaml"))
    if not tests:
        return [f"no promtool unit tests in {tests_dir}"]
    for t in tests:
        shutil.copyfile(t, workdir / t.name)
    out = _run([promtool, "test", "rules", *(t.name for t in tests)], cwd=workdir)
    if out.returncode != 0:
        return ["promtool test rules: " + (out.stdout + out.stderr).strip()]
    return []
