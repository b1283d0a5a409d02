"""cloudml restarts itself once under jemalloc when started plainly (cloudml.allocator)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cloudml import allocator

REPO = Path(__file__).resolve().parents[1]
LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def _exists(path: str) -> bool:
    return path == LIB


def test_reexec_env_preloads_jemalloc_once():
    env = allocator.reexec_env({"PATH": "/bin"}, exists=_exists, maps="")
    assert env == {"PATH": "/bin", "LD_PRELOAD": LIB, "MALLOC_CONF": allocator.MALLOC_CONF,
                   allocator.ENV_DONE: "1"}  # fmt: skip
    # a user's own preload and malloc settings are kept (jemalloc goes first)
    env = allocator.reexec_env({"LD_PRELOAD": "/x/libfoo.so", "MALLOC_CONF": "narenas:2"},
                               exists=_exists, maps="")  # fmt: skip
    assert env["LD_PRELOAD"] == f"{LIB} /x/libfoo.so" and env["MALLOC_CONF"] == "narenas:2"


@pytest.mark.parametrize(
    "env, maps, exists",
    [
        ({"LD_PRELOAD": LIB}, "", _exists),  # already preloaded
        ({}, f"7f00-7f01 r-xp 0 00:00 0 {LIB}\n", _exists),  # already mapped
        ({allocator.ENV_DONE: "1"}, "", _exists),  # re-executed once already
        ({allocator.ENV_OFF: "1"}, "", _exists),  # turned off
        ({}, "", lambda p: False),  # not installed
    ],
)
def test_no_reexec_when_it_would_change_nothing(env, maps, exists):
    assert allocator.reexec_env(env, exists=exists, maps=maps) is None


def test_the_library_list_matches_the_make_targets_script():
    text = (REPO / "scripts" / "jemalloc-env.sh").read_text()
    listed = re.search(r"CLOUDML_JEMALLOC_LIBS:-([^}]*)\}", text).group(1).split()
    assert tuple(listed) == allocator.JEMALLOC_LIBS


@pytest.mark.skipif(not os.path.exists(LIB), reason="NOT EXERCISED: libjemalloc2 not installed")
def test_a_plain_process_ends_up_under_jemalloc():
    probe = ("import os; from cloudml.allocator import jemalloc_loaded, ENV_DONE; "
             "print(jemalloc_loaded({}, open('/proc/self/maps').read()), os.environ[ENV_DONE])")  # fmt: skip
    code = f"from cloudml.allocator import reexec_under_jemalloc as r; r(['-c', {probe!r}])"
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", allocator.ENV_DONE, allocator.ENV_OFF)}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=REPO)  # fmt: skip
    assert out.stdout.split() == ["True", "1"], out.stderr
    # the CLI end to end: restarted once, same output
    res = subprocess.run([sys.executable, "-m", "cloudml", "--version"], env=env,
                         capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert res.returncode == 0 and res.stdout.strip(), res.stderr


def test_only_the_process_command_line_restarts(monkeypatch):
    """main() called from Python (tests, other tools) never replaces the caller's process."""
    import cloudml.cli as cli

    calls = []
    monkeypatch.setattr(cli, "reexec_under_jemalloc", calls.append)
    monkeypatch.setattr(sys, "argv", ["cloudml", "--version"])
    with pytest.raises(SystemExit):
        cli.main()
    assert calls == [["-m", "cloudml", "--version"]]
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert len(calls) == 1
