"""`cloudml` command line: one subcommand per stage, each defined next to the code it runs.

COMMANDS is the one table of subcommands: name -> (module that defines it, one-line help).
Only the chosen command's module is imported; its `add_command(subparsers)` adds its
parser(s) and sets `func`. Every other command gets a placeholder parser that carries its
help line, so `cloudml --help` lists them all without importing torch or kfp.
A CloudMLError becomes one `error: ...` line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NamedTuple

from cloudml import __version__
from cloudml.errors import CloudMLError


class Command(NamedTuple):
    module: str  # defines add_command(subparsers), which adds this command's parser
    help: str  # the line `cloudml --help` shows; the same text the module's parser has


COMMANDS: dict[str, Command] = {
    "config": Command("cloudml.config_cli", "print the resolved configuration as JSON"),
    "compile": Command("cloudml.cluster.submit", "compile a preset's pipeline to YAML"),
    "submit": Command("cloudml.cluster.submit", "compile, upload and start a run on $KFP_HOST"),
    "schedule": Command(
        "cloudml.cluster.submit", "recurring run on $KFP_HOST (six-field cron, UTC)"
    ),
    "gate": Command(
        "cloudml.gate", "fail (exit 1) unless R² in a metrics.json beats the threshold"
    ),
    "run": Command(
        "cloudml.cluster.local_run", "run a pipeline on KFP's local runner (embedded default)"
    ),
    "pretrain": Command("cloudml.training.stages", "train on the pretrain flight"),
    "finetune": Command("cloudml.training.stages", "finetune on all training flights"),
    "evaluate": Command("cloudml.evaluate", "metrics of a checkpoint on the validation flight"),
    "synth": Command(
        "cloudml.data.synth", "write the synthetic six-flight campaign in the raw layout"
    ),
    "upload": Command(
        "cloudml.store.cli",
        "upload a directory to s3://bucket/prefix (or a path) with a sha256 manifest",
    ),
    "ingest": Command("cloudml.data.ingest", "raw flight files -> processed shard (one flight)"),
    "preflight": Command(
        "cloudml.cluster.preflight", "check the cluster is ready for `make submit`"
    ),
}


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand named in argv: its first word that is not an option (the top-level
    options take no values), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def _placeholder(name: str):
    def run(args: argparse.Namespace) -> int:
        raise RuntimeError(f"cloudml {name}: its module was not loaded (a bug in cloudml/cli.py)")

    return run


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser: `command`'s module adds its real parser(s), every other
    command a placeholder with its help line (enough to list it, or to reject a typo)."""
    parser = argparse.ArgumentParser(prog="cloudml", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cloudml {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = COMMANDS[command].module if command in COMMANDS else None
    for name, cmd in COMMANDS.items():
        if name in sub.choices:  # added with another command of the same module
            continue
        if cmd.module == wanted:
            importlib.import_module(cmd.module).add_command(sub)
            if name not in sub.choices:
                raise RuntimeError(
                    f"{cmd.module}.add_command did not add command {name!r} "
                    "(cloudml/cli.py COMMANDS is out of date)"
                )
            continue
        sub.add_parser(name, help=cmd.help).set_defaults(func=_placeholder(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(chosen_command(argv)).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        rc = args.func(args)
    except CloudMLError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
