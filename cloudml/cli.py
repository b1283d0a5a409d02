"""`cloudml` command line: one subcommand per stage, each defined next to the code it runs.

Each module in COMMAND_MODULES exposes `add_command(subparsers)`, which adds its parser and
sets `func`. A CloudMLError becomes one `error: ...` line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cloudml import __version__
from cloudml.errors import CloudMLError

COMMAND_MODULES = [
    "cloudml.config_cli",
    "cloudml.cluster.submit",
    "cloudml.gate",
    "cloudml.cluster.local_run",
    "cloudml.training.stages",
    "cloudml.evaluate",
    "cloudml.data.synth",
    "cloudml.store.backends",
    "cloudml.data.ingest",
    "cloudml.cluster.preflight",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudml", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cloudml {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
