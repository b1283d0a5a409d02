"""The configuration on the command line: `--preset` / `--set` and `cloudml config`.

Every command that takes a config calls `add_config_args(parser)` and, when it runs,
`config_from_args(args)`; `cloudml config` prints the resolved configuration as JSON.
"""

from __future__ import annotations

import argparse

from cloudml.config import Config, load_config


def add_config_args(parser: argparse.ArgumentParser, default_preset: str = "tuned") -> None:
    """--preset / --set, shared by every command that takes a config."""
    parser.add_argument(
        "--preset",
        default=default_preset,
        help=f"preset name or YAML path (default {default_preset})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (repeatable), e.g. --set learning_rate=3e-4",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """The validated Config named by parsed --preset / --set arguments."""
    return load_config(args.preset, args.overrides)


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the resolved configuration as JSON")
    add_config_args(p)
    p.set_defaults(func=lambda args: print(config_from_args(args).to_json()))
