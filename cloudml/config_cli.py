"""The configuration on the command line: `--preset` / `--set` and `cloudml config`.

Every command that takes a config calls `add_config_args(parser)` and, when it runs,
`config_from_args(args)`; `cloudml config` prints the resolved configuration as JSON.
`--preset` is the one name of the preset option on every command; `--pipeline` (the name
the pipeline commands used to have, and `make ... PIPELINE=`) stays as its alias.
"""

from __future__ import annotations

import argparse

from cloudml.config import Config, load_config, preset_names


def _preset_name(text: str) -> str:
    """argparse type for commands whose preset also names a pipeline and its run folders:
    a preset name only, not a YAML path (a path would become part of a pipeline name)."""
    if text.endswith((".yaml", ".yml")) or "/" in text:
        raise argparse.ArgumentTypeError(
            f"{text!r}: this command takes a preset name ({', '.join(preset_names())}), "
            "not a YAML path"
        )
    return text


def add_config_args(
    parser: argparse.ArgumentParser,
    default_preset: str = "tuned",
    *,
    names_only: bool = False,
    overrides: bool = True,
) -> None:
    """--preset (alias --pipeline) and --set, shared by every command that takes a config.

    `names_only`: the compile/submit/schedule/run commands, whose preset names the pipeline
    (and its run folders); `overrides=False`: no --set (compile: every key is a run parameter).
    """
    known = ", ".join(preset_names())
    parser.add_argument(
        "--preset",
        "--pipeline",
        dest="preset",
        default=default_preset,
        metavar="PRESET",
        type=_preset_name if names_only else str,
        help=(
            f"preset name ({known}; default {default_preset})"
            if names_only
            else f"preset name ({known}) or a YAML file path (default {default_preset})"
        )
        + "; --pipeline is an alias",
    )
    if not overrides:
        return
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (repeatable), e.g. --set learning_rate=3e-4; "
        "`cloudml config` prints every key",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """The validated Config named by parsed --preset / --set arguments."""
    return load_config(args.preset, args.overrides)


def _print_config(args: argparse.Namespace) -> int:
    print(config_from_args(args).to_json())
    return 0


def keys_epilog(width: int = 100) -> str:
    """Every config key with its one description (cloudml.config.key_help), for --help."""
    import textwrap

    from cloudml.config import key_help

    helps = key_help()
    pad = max(map(len, helps)) + 4
    lines = ["config keys (--set KEY=VALUE; docs/config.md has each preset's defaults):"]
    for key, text in helps.items():
        body = textwrap.wrap(" ".join(text.split()), width - pad, break_on_hyphens=False) or [""]
        lines.append(f"  {key:<{pad - 2}}{body[0]}")
        lines += [" " * pad + more for more in body[1:]]
    return "\n".join(lines)


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="print the resolved configuration as JSON",
        description="Print the configuration a command would run with (preset + --set) as JSON.",
        epilog=keys_epilog(),
    )
    add_config_args(p)
    p.set_defaults(func=_print_config)
