"""The set-up scripts `make run` / `make test` start with (scripts/, Makefile): the Python
check, where torch comes from, what is said when jemalloc or a Debian package is missing.
Each runs the real script with stand-ins for the machine (PATH, a local HTTP server)."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def _bin(tmp: Path, tools: dict[str, str] | None = None, link: tuple[str, ...] = ()) -> str:
    """A PATH of only `link` (real tools) and `tools` (name -> bash body stand-ins)."""
    d = tmp / "bin"
    d.mkdir(parents=True, exist_ok=True)
    for name in ("bash", "cat", "dirname", "head", "ls", "mkdir", "rm", "sed", *link):
        real = shutil.which(name)
        if real and not (d / name).exists():
            (d / name).symlink_to(real)
    for name, body in (tools or {}).items():
        (d / name).write_text(f"#!/bin/bash\n{body}\n")
        (d / name).chmod(0o755)
    return str(d)


def _run(script: str, *args: str, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TORCH_", "CLOUDML_"))}
    return subprocess.run([shutil.which("bash"), str(SCRIPTS / script), *args],
                          env={**base, "PATH": path, **env}, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


# --- Python >= 3.11 --------------------------------------------------------------------------
def test_an_old_python_is_refused_in_one_line(tmp_path):
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/bash\n# a stand-in Python 3.9\n"
                   'case "$2" in *exit*) exit 1;; *) echo 3.9;; esac\n')  # fmt: skip
    old.chmod(0o755)
    out = _run("setup-venv.sh", str(old), str(tmp_path / "venv"), path=_bin(tmp_path))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == (f"error: cloudml needs Python 3.11 or newer; {old} is 3.9 "
                          "(make PYTHON=python3.11 ...)\n")  # fmt: skip
    assert not (tmp_path / "venv").exists()
    gone = _run("setup-venv.sh", "python3.99", str(tmp_path / "venv"), path=_bin(tmp_path))
    assert gone.returncode == 1 and gone.stderr.startswith("error: python3.99 not found")


# --- where torch comes from --------------------------------------------------------------------
@pytest.fixture
def cpu_index(tmp_path):
    """A wheel index that answers at /torch/ (stands in for the CPU wheel index)."""
    (tmp_path / "index" / "torch").mkdir(parents=True)
    (tmp_path / "index" / "torch" / "index.html").write_text("<html></html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path / "index"), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


DEAD = "http://127.0.0.1:9"  # discard port: nothing listens, the request fails at once


def test_torch_from_the_cpu_index_when_it_answers(tmp_path, cpu_index):
    out = _run("torch-source.sh", sys.executable, "2.13.0", path=_bin(tmp_path),
               TORCH_CPU_INDEX=cpu_index, TORCH_WHEEL_DIR=str(tmp_path))  # fmt: skip
    assert (out.returncode, out.stdout) == (0, f"--index-url {cpu_index} torch==2.13.0\n")


def test_torch_from_the_local_wheel_when_the_index_does_not_answer(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.12.0+cpu-cp311-cp311-linux_x86_64.whl").touch()  # another version
    wheel = wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.touch()
    out = _run("torch-source.sh", sys.executable, "2.13.0", path=_bin(tmp_path),
               TORCH_CPU_INDEX=DEAD, TORCH_WHEEL_DIR=str(wheels))  # fmt: skip
    assert (out.returncode, out.stdout) == (0, f"{wheel}\n")


def test_no_cpu_build_anywhere_stops_instead_of_pulling_the_cuda_build(tmp_path):
    out = _run("torch-source.sh", sys.executable, "2.13.0", path=_bin(tmp_path),
               TORCH_CPU_INDEX=DEAD, TORCH_WHEEL_DIR=str(tmp_path))  # fmt: skip
    assert out.returncode == 1 and out.stdout == ""
    assert "error: no CPU build of torch 2.13.0" in out.stderr
    assert "not installing PyPI's CUDA build" in out.stderr


def test_a_gpu_machine_gets_the_default_cuda_build(tmp_path, cpu_index):
    path = _bin(tmp_path, {"nvidia-smi": 'echo "GPU 0: NVIDIA H200"'})
    out = _run("torch-source.sh", sys.executable, "2.13.0", path=path,
               TORCH_CPU_INDEX=cpu_index)  # fmt: skip
    assert (out.returncode, out.stdout) == (0, "torch==2.13.0\n")
    # a driver that does not answer (no GPU behind it) is a CPU machine
    path = _bin(tmp_path / "x", {"nvidia-smi": "exit 9"})
    out = _run("torch-source.sh", sys.executable, "2.13.0", path=path, TORCH_CPU_INDEX=cpu_index)
    assert out.stdout == f"--index-url {cpu_index} torch==2.13.0\n"


# --- jemalloc and the Debian packages ----------------------------------------------------------
def test_not_root_one_note_for_the_servers_and_one_warning_for_jemalloc(tmp_path):
    venv = tmp_path / "venv"
    path = _bin(tmp_path, {"id": "echo 1000"})  # no prometheus, pushgateway, promtool
    libs = str(tmp_path / "libjemalloc.so.2")  # absent
    out = _run("install-system-deps.sh", str(venv), path=path, CLOUDML_JEMALLOC_LIBS=libs)
    assert out.returncode == 0 and out.stdout == ""
    assert out.stderr == (
        "note: prometheus prometheus-pushgateway not installed (not root: sudo apt-get install "
        "libjemalloc2 prometheus prometheus-pushgateway); the tests that need them skip (and "
        "fail under CI=true)\n"
    )
    # the run that follows: one warning with the reason, no environment, and it goes on
    env = _run("jemalloc-env.sh", str(venv), path=path, CLOUDML_JEMALLOC_LIBS=libs)
    assert (env.returncode, env.stdout) == (0, "")
    assert env.stderr == (
        "warning: running without jemalloc (not root: sudo apt-get install libjemalloc2 "
        "prometheus prometheus-pushgateway); CPU training is about 2.5x slower\n"
    )


def test_root_but_not_installable_says_so(tmp_path):
    venv = tmp_path / "venv"
    path = _bin(tmp_path, {"id": "echo 0", "apt-get": "exit 100",
                           "prometheus": "", "promtool": "", "prometheus-pushgateway": ""})  # fmt: skip
    libs = str(tmp_path / "libjemalloc.so.2")
    out = _run("install-system-deps.sh", str(venv), path=path, CLOUDML_JEMALLOC_LIBS=libs)
    assert out.returncode == 0
    assert out.stdout == "installing Debian packages: libjemalloc2\n" and out.stderr == ""
    env = _run("jemalloc-env.sh", str(venv), path=path, CLOUDML_JEMALLOC_LIBS=libs)
    assert env.stderr == (
        "warning: running without jemalloc (apt-get could not install it); CPU training is "
        "about 2.5x slower\n"
    )


def test_with_jemalloc_the_run_gets_its_environment_and_no_warning(tmp_path):
    lib = tmp_path / "libjemalloc.so.2"
    lib.touch()
    path = _bin(tmp_path, {"id": "echo 1000", "prometheus": "", "promtool": "",
                           "prometheus-pushgateway": ""})  # fmt: skip
    out = _run("install-system-deps.sh", str(tmp_path / "v"), path=path,
               CLOUDML_JEMALLOC_LIBS=f"/nonexistent {lib}")  # fmt: skip
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    env = _run("jemalloc-env.sh", str(tmp_path / "v"), path=path,
               CLOUDML_JEMALLOC_LIBS=f"/nonexistent {lib}")  # fmt: skip
    assert env.stdout == f"LD_PRELOAD={lib} MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1\n"
    assert env.stderr == ""


# --- the Makefile ------------------------------------------------------------------------------
def test_make_run_passes_set_as_overrides(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    venv = tmp_path / "venv"
    venv.mkdir()
    for stamp in (".installed-stamp", ".system-stamp"):  # newer than their prerequisites
        (venv / stamp).touch()
    out = subprocess.run([make, "-n", "-C", str(ROOT), "run", f"VENV={venv}",
                          "SET=epochs=1 ensemble_size=1"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"{venv}/bin/python -m cloudml run --pipeline tuned --runner subprocess --set " \
           "epochs=1 --set ensemble_size=1" in out.stdout  # fmt: skip
    # RUNNER=container runs the same pipeline with every task in the local image
    out = subprocess.run([make, "-n", "-C", str(ROOT), "run", f"VENV={venv}", "RUNNER=container"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "-m cloudml run --pipeline tuned --runner container" in out.stdout, out.stdout
