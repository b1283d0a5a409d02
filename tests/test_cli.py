"""The conventions every `cloudml` command shares (cloudml/cli.py): one preset option with its
alias, help on every option, the environment variables listed in --help, -v on either side
of the command name, distinct exit codes, and a closed stdout that is not a traceback."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cloudml.cli import COMMANDS, ENV_VARS, EXIT_CODES, build_parser, main
from cloudml.errors import EXIT_BROKEN_PIPE, EXIT_ERROR, EXIT_USAGE, CloudMLError, GateFailed

ROOT = Path(__file__).resolve().parents[1]


def _sub(name: str) -> argparse.ArgumentParser:
    parser = build_parser(name)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help(name):
    missing = {
        (name, a.option_strings[-1])
        for a in _sub(name)._actions
        if a.option_strings and not (a.help and a.help.strip())
    }
    assert not missing


CONFIG_COMMANDS = sorted(n for n in COMMANDS if "--set" in _sub(n)._option_string_actions)


def test_preset_commands_are_the_ones_expected():
    assert CONFIG_COMMANDS == sorted(
        ["config", "evaluate", "finetune", "ingest", "pretrain", "run", "schedule", "submit"]
    )


@pytest.mark.parametrize("name", [*CONFIG_COMMANDS, "compile"])
def test_one_preset_option_with_its_alias(name):
    opts = _sub(name)._option_string_actions
    assert opts["--preset"] is opts["--pipeline"] and opts["--preset"].dest == "preset"


@pytest.mark.parametrize("name", [*CONFIG_COMMANDS, "compile"])
def test_pipeline_alias_parses_to_the_same_value(name):
    required = {"ingest": ["--raw", "r", "--flight", "f", "--out", "o"],
                "pretrain": ["--shard", "s", "--out", "o"],
                "finetune": ["--shard", "s", "--pretrained", "p", "--out", "o"],
                "evaluate": ["--shard", "s", "--checkpoint", "c", "--out", "o"],
                "schedule": ["--cron", "0 0 6 * * 1"]}.get(name, [])  # fmt: skip
    a = build_parser(name).parse_args([name, "--pipeline", "baseline", *required])
    b = build_parser(name).parse_args([name, "--preset", "baseline", *required])
    assert a.preset == b.preset == "baseline"


def _env_read_in_source() -> set[str]:
    """Every environment variable named in an os.environ / getenv call under cloudml/."""
    pat = re.compile(r"""(?:environ(?:\.get|\.setdefault)?\s*[\[(]|getenv\(|in os\.environ)""")
    name = re.compile(r"""["']([A-Z][A-Z0-9_]+)["']""")
    found = set()
    for path in (ROOT / "cloudml").rglob("*.py"):
        for line in path.read_text().splitlines():
            if pat.search(line):
                found |= set(name.findall(line))
    return found


def test_every_environment_variable_read_is_listed_for_a_command():
    read = _env_read_in_source()
    assert {"KFP_HOST", "MINIO_ENDPOINT", "CLOUDML_STORE"} <= read  # the scan finds them
    listed = {v for cmd in COMMANDS.values() for v in cmd.env}
    assert read <= listed <= set(ENV_VARS)


@pytest.mark.parametrize("name", ["upload", "submit", "gate"])
def test_help_lists_the_commands_environment_and_exit_codes(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for var in COMMANDS[name].env:
        assert re.search(rf"^  {var} +\S", out, re.M), var
    if not COMMANDS[name].env:
        assert "environment variables: none read by this command" in out
    assert EXIT_CODES in out


def test_top_level_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert EXIT_CODES in out
    for code in ("0", "1", "2", "130", "141"):
        assert re.search(rf"^  {code} +\S", out, re.M), code


@pytest.mark.parametrize(
    "argv, verbose",
    [
        (["config"], False),
        (["-v", "config"], True),
        (["config", "-v"], True),
        (["--verbose", "config", "--preset", "baseline"], True),
        (["config", "--preset", "baseline", "--verbose"], True),
    ],
)
def test_verbose_before_or_after_the_command(argv, verbose):
    assert build_parser("config").parse_args(argv).verbose is verbose


def test_usage_and_runtime_errors_have_distinct_exit_codes(capsys):
    assert len({EXIT_USAGE, EXIT_ERROR, EXIT_BROKEN_PIPE}) == 3
    assert CloudMLError.exit_code == GateFailed.exit_code == EXIT_ERROR
    with pytest.raises(SystemExit) as e:
        main(["config", "--no-such-option"])
    assert e.value.code == EXIT_USAGE
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    assert main(["config", "--set", "epochs=0"]) == EXIT_ERROR
    assert capsys.readouterr().err.startswith("error: invalid configuration")


def test_closed_stdout_is_not_a_traceback(tmp_path):
    """`cloudml config | head -1`: the reader is gone before the JSON is written (closed
    before the interpreter has even started), so the write fails every time."""
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudml", "config"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == EXIT_BROKEN_PIPE, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and err == "", err
