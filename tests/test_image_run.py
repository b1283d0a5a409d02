"""The components inside the locally built CPU image (podman, cloudml/cluster/container_run.py).

The pure parts (image names, environment, network, run settings) always run. The rest
builds or reuses localhost/cloudml-{cpu,gpu}:<tag> (images/build.sh --local; a second run
reuses it by the hash of its inputs) and runs `ingest` and a 1-epoch `pretrain` of a
one-flight synthetic campaign through kfp.local, once in this venv (SubprocessRunner, as
`make run`) and once in the image under the cluster's restricted settings (DockerRunner on
podman's API): the shard's data and the losses must agree. Skipped, loudly, only where
podman cannot run (and never under CI=true).
"""

import contextlib
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from cloudml.cluster import container_run as cr
from cloudml.cluster import settings
from tests.support.skips import skip_or_fail

FLIGHT = "30Oct24"  # the tuned preset's pretrain_flight
LOSS_KEYS = ("train_loss", "selection_loss", "selection_r2")


# --- pure ----------------------------------------------------------------------------------
def test_local_name_keeps_name_and_tag() -> None:
    assert cr.local_name("ghcr.io/cloudml/cloudml-gpu:1.2.3") == "localhost/cloudml-gpu:1.2.3"
    assert cr.local_name("registry:5000/a/b/cloudml-cpu:0.1.0") == "localhost/cloudml-cpu:0.1.0"
    for bad in ("ghcr.io/cloudml/cloudml-cpu", "python:3.11", "ghcr.io/x/other:1"):
        with pytest.raises(cr.ContainerError, match="not a CloudML image"):
            cr.local_name(bad)


def test_passthrough_env_takes_only_task_settings() -> None:
    env = {
        "CLOUDML_STORE": "/s", "CLOUDML_REGISTRY": "r", "CLOUDML_TAG": "t",
        "MINIO_ENDPOINT": "h:9000", "PUSHGATEWAY_URL": "http://p", "OMP_NUM_THREADS": "1",
        "PATH": "/host/bin", "HOME": "/root", "LD_PRELOAD": "x.so", "DOCKER_HOST": "unix://s",
    }  # fmt: skip
    assert cr.passthrough_env(env) == {
        "CLOUDML_STORE": "/s", "MINIO_ENDPOINT": "h:9000", "PUSHGATEWAY_URL": "http://p",
        "OMP_NUM_THREADS": "1",
    }  # fmt: skip


def test_network_only_when_a_service_is_named() -> None:
    assert cr.network_mode({"CLOUDML_STORE": "/tmp/store"}) == "none"
    assert cr.network_mode({"CLOUDML_STORE": "s3://cloudml"}) == "host"
    assert cr.network_mode({"PUSHGATEWAY_URL": "http://127.0.0.1:9091"}) == "host"
    assert cr.network_mode({"MINIO_ENDPOINT": ""}) == "none"


def test_restricted_run_args(tmp_path: Path) -> None:
    pytest.importorskip("docker", reason="the docker package (pip install -e '.[dev]')")
    args = cr.restricted_run_args([tmp_path / "in"], [tmp_path / "out"], environ={})
    assert (args["user"], args["read_only"], args["cap_drop"], args["security_opt"]) == (
        "10001:10001", True, ["ALL"], ["no-new-privileges"],
    )  # fmt: skip
    assert args["tmpfs"]["/tmp"].startswith("rw,") and args["tmpfs"]["/var/tmp"].startswith("ro,")
    assert args["network_mode"] == "none"
    mounts = {(m["Source"], m["Target"], m["ReadOnly"]) for m in args["mounts"]}
    assert mounts == {
        (str(tmp_path / "in"), str(tmp_path / "in"), True),
        (str(tmp_path / "out"), str(tmp_path / "out"), False),
    }
    assert "auto_remove" not in args and "entrypoint" not in args


# --- with podman ----------------------------------------------------------------------------
def shard_digest(path: Path) -> str:
    """sha256 over a shard's stored data: every real dataset (name, dtype, shape, bytes) and
    every attribute but `summary`, whose timings differ from run to run (so the file's own
    sha256 differs even between two runs in the same venv)."""
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visit(names.append)
        for name in sorted(names):
            obj = f[name]
            if isinstance(obj, h5py.Dataset) and not obj.is_virtual:
                h.update(f"{name} {obj.dtype} {obj.shape}\n".encode())
                h.update(obj[()].tobytes())
        for key in sorted(k for k in f.attrs if k != "summary"):
            h.update(f"{key}={f.attrs[key]!r}\n".encode())
    return h.hexdigest()


def test_shard_digest_ignores_timings_only(tmp_path: Path) -> None:
    import dataclasses

    import numpy as np

    from cloudml.data.shard import Shard, write_shard

    base = Shard(
        flight=FLIGHT, frame_table=np.zeros((4, 2, 3), np.float32),
        frame_index=np.array([[0, 1], [1, 2], [2, 3]]), cbh_km=np.array([0.5, 0.6, 0.7]),
        sza_deg=np.zeros(3), saa_deg=np.zeros(3), time_utc=np.arange(3.0),
        dt_match_s=np.zeros(3), config={"temporal_frames": 2}, summary={"seconds": 1.0},
    )  # fmt: skip
    slower = dataclasses.replace(base, summary={"seconds": 2.0})
    other_label = dataclasses.replace(base, cbh_km=np.array([0.5, 0.6, 0.8]))
    other_config = dataclasses.replace(base, config={"temporal_frames": 3})
    a, b, c, d = (
        write_shard(tmp_path / f"{i}.h5", s)
        for i, s in enumerate((base, slower, other_label, other_config))
    )
    assert hashlib.sha256(a.read_bytes()).digest() != hashlib.sha256(b.read_bytes()).digest()
    assert shard_digest(a) == shard_digest(b)
    assert len({shard_digest(a), shard_digest(c), shard_digest(d)}) == 3


@pytest.fixture(scope="module")
def local_images() -> list[str]:
    problem = cr.podman_problem()
    if problem:
        skip_or_fail(f"podman cannot run containers here: {problem}")
    pytest.importorskip("docker", reason="the docker package (pip install -e '.[dev]')")
    return cr.ensure_local_images(kinds=("cpu", "gpu"))


def _two_stage_graph():
    """ingest (one flight) -> pretrain, the pipeline's own components."""
    from kfp import dsl

    from components.ingest import ingest
    from components.pretrain import pretrain

    @dsl.pipeline(name="image-check")
    def image_check(raw_uri: str, config_json: str) -> None:
        with dsl.ParallelFor([FLIGHT], name="each-flight") as flight:
            ing = ingest(raw_uri=raw_uri, flight=flight, config_json=config_json,
                         raw_fingerprint="image-check")  # fmt: skip
        pretrain(shards=dsl.Collected(ing.outputs["shard"]), config_json=config_json)

    return image_check


def _outputs(root: Path) -> tuple[str, list[dict[str, float]]]:
    (shard,) = root.rglob(f"{FLIGHT}.h5")
    (history,) = root.rglob("history.json")
    rows = json.loads(history.read_text())
    return shard_digest(shard), [{k: r[k] for k in LOSS_KEYS} for r in rows]


def test_task_exit_status_and_restrictions(local_images: list[str], tmp_path: Path) -> None:
    """Inside the CPU image under the session's settings: uid 10001, no capabilities, only
    /tmp and the writable mount writable; and a failing command's status comes back."""
    import docker

    out = tmp_path / "out"
    probe = (
        "id -u; grep CapEff /proc/self/status; "
        f"for d in / /opt/venv /run /var/tmp /tmp {out}; do "
        'touch "$d/.w" 2>/dev/null && echo "rw $d" || echo "ro $d"; done; exit 3'
    )
    with cr.container_session(tmp_path / "root", writable=[out], build=False) as runner:
        client = docker.from_env()
        logs = tmp_path / "logs.txt"
        with logs.open("w") as fh, contextlib.redirect_stdout(fh):
            status = cr.run_task_container(
                client, local_images[0], ["sh", "-c", probe], volumes={},
                **runner.container_run_args,
            )  # fmt: skip
        client.close()
    text = logs.read_text()
    assert status == 3, text
    assert text.splitlines()[0] == "10001"
    assert "CapEff:\t0000000000000000" in text
    writable = {line.split()[1] for line in text.splitlines() if line.startswith("rw ")}
    assert writable == {"/tmp", str(out)}, text


def test_ingest_and_pretrain_in_image_match_venv(
    local_images: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kfp import local

    from cloudml.steps.common import resolve_config_json

    raw = tmp_path / "raw"
    subprocess.run(
        [sys.executable, "-m", "cloudml", "synth", "--out", str(raw), "--flights", FLIGHT],
        check=True, capture_output=True,
    )  # fmt: skip
    config_json = resolve_config_json("tuned", {"scale": "local", "epochs": 1})
    # one thread on both sides: the same reductions in the same order
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("CLOUDML_STORE", raising=False)  # no stage-state sync to mount
    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    args = {"raw_uri": str(raw), "config_json": config_json}

    venv_root = tmp_path / "venv"
    local.init(local.SubprocessRunner(use_venv=False), pipeline_root=str(venv_root),
               raise_on_error=True)  # fmt: skip
    _two_stage_graph()(**args)

    image_root = tmp_path / "image"
    with cr.container_session(image_root, read_only=[raw], build=False) as runner:
        graph = _two_stage_graph()
        assert cr.use_local_images(graph) == {
            f"localhost/{settings.CPU_IMAGE_NAME}:{settings.image_tag()}",
            f"localhost/{settings.GPU_IMAGE_NAME}:{settings.image_tag()}",
        }
        local.init(runner, pipeline_root=str(image_root), raise_on_error=True)
        graph(**args)

    venv_digest, venv_losses = _outputs(venv_root)
    image_digest, image_losses = _outputs(image_root)
    assert image_digest == venv_digest
    assert len(image_losses) == len(venv_losses) == 1
    for key in LOSS_KEYS:
        assert image_losses[0][key] == pytest.approx(venv_losses[0][key], abs=1e-6), key
