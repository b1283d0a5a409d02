"""KFP's local runner with every component inside the locally built images (podman).

    with container_session(pipeline_root, read_only=[data_dir], writable=[store]) as runner:
        graph = build_pipeline(...)
        use_local_images(graph)              # localhost/cloudml-{cpu,gpu}:<tag>
        kfp.local.init(runner, pipeline_root=str(pipeline_root), raise_on_error=True)
        graph(**arguments)

`kfp.local.DockerRunner` talks to podman's Docker-compatible API (`podman system service`,
DOCKER_HOST). Each task runs its component's own command in the image, as the cluster runs
it (docs/deploy.md, "Local images with podman"): uid 10001, read-only root filesystem, every
capability dropped, no privilege escalation, /tmp a tmpfs; writable only the pipeline root
(KFP mounts it at the same path) and the `writable` directories, `read_only` ones mounted
read-only at their own paths. One part of kfp.local is replaced for the session: its
container launcher, which loses a task's exit status (run_task_container says how).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cloudml.cluster import settings
from cloudml.errors import CloudMLError

LOCAL_REGISTRY = "localhost"
RUN_UID = 10001  # the images' USER and the cluster's runAsUser
REPO = Path(__file__).resolve().parents[2]
BUILD_SH = REPO / "images" / "build.sh"
CONTAINERS_CONF = REPO / "images" / "podman" / "containers.conf"
TMPFS_OPTIONS = "rw,nosuid,nodev,mode=1777,size=2g"
# what a task may need from the caller's environment: store, telemetry and thread settings,
# and the float-path switches of make test-floatpaths
PASSTHROUGH_PREFIXES = ("CLOUDML_", "MINIO_", "PUSHGATEWAY_")
PASSTHROUGH_NAMES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS", "TZ")
NETWORK_NAMES = ("MINIO_ENDPOINT", "PUSHGATEWAY_URL")


class ContainerError(CloudMLError):
    """podman is missing or unusable, or an image cannot be built or found."""


# --- pure: the run settings ------------------------------------------------------------------
def passthrough_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's variables a task inside the container needs (never the whole environment:
    the host's PATH, HOME or LD_PRELOAD would break the image's own). CLOUDML_THREADS stays
    out: each task's own value (its CPU request, from the compiled spec) applies."""
    return {
        k: v
        for k, v in environ.items()
        if k.startswith(PASSTHROUGH_PREFIXES)
        and k not in ("CLOUDML_REGISTRY", "CLOUDML_TAG", "CLOUDML_THREADS")
        or k in PASSTHROUGH_NAMES
    }


def network_mode(environ: Mapping[str, str]) -> str:
    """'none' unless a task must reach a service (MinIO, the Pushgateway, an s3:// store);
    then 'host', so that the same loopback addresses the subprocess runner uses still work."""
    remote = any(environ.get(k) for k in NETWORK_NAMES)
    remote = remote or environ.get("CLOUDML_STORE", "").startswith("s3://")
    return "host" if remote else "none"


def restricted_run_args(
    read_only: Iterable[Path] = (),
    writable: Iterable[Path] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`containers.run` keyword arguments for kfp.local.DockerRunner: the restricted Pod
    Security settings the manifests declare (runAsUser 10001, readOnlyRootFilesystem,
    capabilities drop ALL, allowPrivilegeEscalation false, seccomp RuntimeDefault = the
    engine's default profile), /tmp as tmpfs, extra bind mounts at the same paths."""
    from docker.types import Mount

    environ = os.environ if environ is None else environ
    mounts = [
        Mount(target=str(p), source=str(p), type="bind", read_only=ro)
        for paths, ro in ((read_only, True), (writable, False))
        for p in (Path(x).resolve() for x in paths)
    ]
    return {
        "user": f"{RUN_UID}:{RUN_UID}",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        # podman's --read-only adds writable tmpfs on /run and /var/tmp (its read-only-tmpfs
        # default; /run stays root's): an empty read-only one covers /var/tmp
        "tmpfs": {"/tmp": TMPFS_OPTIONS, "/var/tmp": "ro,nosuid,nodev,noexec,size=4k"},
        "mounts": mounts,
        "environment": passthrough_env(environ),
        "network_mode": network_mode(environ),
    }


def local_name(image: str) -> str:
    """The local image for a compiled image reference: <registry>/cloudml-<kind>:<tag> ->
    localhost/cloudml-<kind>:<tag> (the name images/build.sh --local gives)."""
    name, sep, tag = image.rpartition("/")[2].partition(":")
    if name not in (settings.CPU_IMAGE_NAME, settings.GPU_IMAGE_NAME) or not sep:
        raise ContainerError(f"{image}: not a CloudML image (cloudml-cpu / cloudml-gpu with a tag)")
    return f"{LOCAL_REGISTRY}/{name}:{tag}"


# --- I/O: podman, the images, the service ----------------------------------------------------
def podman_env() -> dict[str, str]:
    """The environment for podman: this repository's containers.conf unless one is set."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def podman_problem() -> str | None:
    """Why podman cannot run containers here, or None when it can: installed, rootful, and
    `podman info` answers with this repository's containers.conf."""
    exe = shutil.which("podman")
    if exe is None:
        return "podman is not installed (images/install-tools.sh installs it as root)"
    if os.geteuid() != 0:
        return "not root: the local images are built and run with rootful podman only"
    probe = subprocess.run(
        [exe, "info", "--format", "{{.Host.OCIRuntime.Name}}"],
        capture_output=True, text=True, env=podman_env(), timeout=60,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"podman info failed: {probe.stderr.strip()[-300:]}"
    return None


def local_image(kind: str, tag: str | None = None) -> str:
    """localhost/cloudml-<kind>:<tag>, the name images/build.sh --local gives."""
    name = {"cpu": settings.CPU_IMAGE_NAME, "gpu": settings.GPU_IMAGE_NAME}[kind]
    return f"{LOCAL_REGISTRY}/{name}:{tag or settings.image_tag()}"


def ensure_local_images(
    tag: str | None = None, kinds: tuple[str, ...] = ("cpu", "gpu"), torch_wheels: str = ""
) -> list[str]:
    """Build (or reuse, when the inputs' hash matches) localhost/cloudml-<kind>:<tag> with
    images/build.sh --local; returns the image names. Needs a source checkout."""
    if not BUILD_SH.is_file():
        raise ContainerError(f"{BUILD_SH}: not found; the images build from a source checkout")
    tag = tag or settings.image_tag()
    env = podman_env()
    wheels = torch_wheels or os.environ.get("TORCH_WHEELS") or os.environ.get("PIP_FIND_LINKS")
    if wheels:
        env["TORCH_WHEELS"] = wheels.split()[0]
    env.setdefault("ENGINE", "podman")
    done = subprocess.run(["bash", str(BUILD_SH), "--local", tag, *kinds], env=env)
    if done.returncode != 0:
        raise ContainerError(f"images/build.sh --local {tag} {' '.join(kinds)}: failed (log above)")
    return [local_image(k, tag) for k in kinds]


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """os.environ with `values` set for the block, put back after."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def podman_service(timeout_s: float = 30.0) -> Iterator[str]:
    """`podman system service --time=0` on a private unix socket, with DOCKER_HOST pointing
    at it for the block (docker.from_env(), which kfp.local's DockerRunner calls, reads it).
    Yields the DOCKER_HOST value; stops the service after."""
    import docker

    with tempfile.TemporaryDirectory(prefix="cloudml-podman-") as tmp:
        sock = Path(tmp) / "podman.sock"
        url = f"unix://{sock}"
        log = (Path(tmp) / "service.log").open("w+")
        proc = subprocess.Popen(
            ["podman", "system", "service", "--time=0", url],
            stdout=log, stderr=subprocess.STDOUT, env=podman_env(),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise ContainerError(f"podman system service exited: {log.read()[-500:]}")
                if sock.exists():
                    try:
                        docker.DockerClient(base_url=url, timeout=5).ping()
                        break
                    except Exception:  # not answering yet
                        pass
                if time.monotonic() > deadline:
                    raise ContainerError(f"podman system service: no answer on {url}")
                time.sleep(0.2)
            with _environ(DOCKER_HOST=url):
                yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def prepare_writable(paths: Iterable[Path]) -> None:
    """Create the directories the tasks write and give them to uid 10001 (we are root: the
    container user must own what it writes, nothing is opened to everyone)."""
    for p in paths:
        p = Path(p)
        p.mkdir(parents=True, exist_ok=True)
        for sub in (p, *p.rglob("*")):
            os.chown(sub, RUN_UID, RUN_UID, follow_symlinks=False)


def run_task_container(
    client: Any, image: str, command: list[str], volumes: dict[str, Any], **run_args: Any
) -> int:
    """Run one task's container and return its exit status; stands in for kfp.local's
    docker_task_handler.run_docker_container (same signature) during a session.

    KFP's own starts the container with auto_remove=True and reads the status after the logs
    end, when the container is usually gone: on a 404 it assumes exit 0 (seen here: a task
    whose command failed was reported SUCCESS), and podman 4.3 at times answers 500 instead,
    which stops the run with an APIError. This one keeps the container until its status is
    read, and never pulls: the images are local (ensure_local_images)."""
    import docker

    run_args.pop("auto_remove", None)
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ContainerError(f"{image}: no such local image (images/build.sh --local)") from None
    container = client.containers.run(
        image=image, command=command, volumes=volumes, detach=True, **run_args
    )
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


@contextlib.contextmanager
def _task_launcher() -> Iterator[None]:
    """kfp.local's DockerRunner with run_task_container as its container launcher."""
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = run_task_container
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original


def prepare_readable(paths: Iterable[Path]) -> None:
    """Let uid 10001 read the input directories (o+rX where missing): the synthetic
    campaign's flight folders come from mkdtemp, 0700 and owned by root."""
    for p in paths:
        for sub in (Path(p), *Path(p).rglob("*")):
            mode = sub.stat().st_mode
            want = mode | stat.S_IROTH | (stat.S_IXOTH if sub.is_dir() else 0)
            if want != mode:
                sub.chmod(want)


def container_runner(
    read_only: Iterable[Path] = (), writable: Iterable[Path] = ()
) -> Any:  # kfp.local.DockerRunner
    """kfp.local.DockerRunner with the restricted settings (restricted_run_args)."""
    from kfp import local

    return local.DockerRunner(**restricted_run_args(read_only, writable))


def use_local_images(graph: Any) -> set[str]:
    """Point every executor of a compiled graph (a @dsl.pipeline) at the local image of the
    same name and tag, in place; returns the local images it now runs. The components took
    their image from settings.py (CLOUDML_REGISTRY) when they were imported, which may have
    been before this run chose the container runner; kfp.local reads the image from this
    same pipeline spec when it starts each task."""
    executors = graph.pipeline_spec.deployment_spec["executors"]
    images = set()
    for key in executors.keys():
        container = executors[key]["container"]
        container["image"] = local_name(container["image"])
        images.add(container["image"])
    missing = [
        i
        for i in sorted(images)
        if subprocess.run(["podman", "image", "exists", i], env=podman_env()).returncode != 0
    ]
    if missing:
        raise ContainerError(
            f"local image(s) missing: {', '.join(missing)} (images/build.sh --local TAG)"
        )
    return images


@contextlib.contextmanager
def container_session(
    pipeline_root: Path,
    read_only: Iterable[Path] = (),
    writable: Iterable[Path] = (),
    build: bool = True,
) -> Iterator[Any]:
    """Everything a containerized local run needs, for the block: podman usable, the local
    images built or reused, the writable directories owned by uid 10001 and the read-only
    ones readable by it, podman's API socket as DOCKER_HOST, run_task_container as the
    launcher. Yields the kfp.local.DockerRunner; call use_local_images(graph) before
    running a graph with it."""
    problem = podman_problem()
    if problem:
        raise ContainerError(f"--runner container: {problem}")
    if build:
        ensure_local_images()
    read_only = [Path(p).resolve() for p in read_only]
    writable = [Path(pipeline_root).resolve(), *(Path(p).resolve() for p in writable)]
    prepare_writable(writable)
    prepare_readable(read_only)
    with podman_service(), _task_launcher():
        yield container_runner(read_only, writable[1:])
