"""`cloudml` command line: one subcommand per stage, each defined next to the code it runs.

COMMANDS is the one table of subcommands: name -> (module that defines it, one-line help,
the environment variables the command reads). Only the chosen command's module is
imported; its `add_command(subparsers)` adds its parser(s) and sets `func`. Every other
command gets a placeholder parser that carries its help line, so `cloudml --help` lists them
all without importing torch or kfp. cli.py adds what every command shares: `-v` after the
command name as well as before it, and the environment variables in the command's --help.
A CloudMLError becomes one `error: ...` line on stderr and exit code 1 (EXIT_CODES).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NamedTuple

from cloudml import __version__
from cloudml.allocator import reexec_under_jemalloc
from cloudml.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CloudMLError,
)
from cloudml.fileio import describe_os_error
from cloudml.threads import prepare_process_env

# What each environment variable does, for the epilog of every command that reads it.
ENV_VARS: dict[str, str] = {
    "CLOUDML_STORE": "artifact store: s3://bucket[/prefix] or a directory (run: a local one)",
    "MINIO_ENDPOINT": "S3 endpoint host:port, needed for an s3:// store",
    "MINIO_SECURE": "true/false: HTTPS to the endpoint (default false)",
    "MINIO_ACCESS_KEY": "S3 access key",
    "MINIO_SECRET_KEY": "S3 secret key (never printed)",
    "MINIO_REGION": "S3 region (default us-east-1)",
    "CLOUDML_STORE_RETRIES": "attempts per store request on transient faults (default 6)",
    "CLOUDML_STORE_RETRY_SECONDS": "longest total retry time per request (default 60)",
    "PUSHGATEWAY_URL": "Prometheus Pushgateway for stage metrics (unset: no metrics pushed)",
    "CLOUDML_COMMIT": "source commit recorded in the evaluation's metrics and model card",
    "CLOUDML_REGISTRY": "image registry of the component images",
    "CLOUDML_TAG": "image tag of the component images (default the package version)",
    "CLOUDML_GPU_NODE_LABEL": "node selector of the GPU pool, key=value",
    "CLOUDML_GPU_TAINT": "taint the GPU pool carries, tolerated by the GPU tasks",
    "CLOUDML_GPU_PARALLELISM": "ensemble members trained at once on the cluster (default 4)",
    "CLOUDML_THREADS": "compute threads (default: the cgroup CPU quota or affinity mask); "
    "also sets OMP_NUM_THREADS unless that is set",
    "CLOUDML_CPU_REQUEST": "set per task by the pipeline: caps the threads at the CPUs the "
    "task requested (a machine with fewer CPUs gives fewer)",
    "CLOUDML_NO_JEMALLOC": "1: stay on glibc malloc (by default cloudml restarts itself once "
    "with jemalloc preloaded when it is installed; CPU training is faster under it)",
    "TORCH_WHEELS": "run --runner container: a directory with the torch wheel for the image "
    "build (default: the first of PIP_FIND_LINKS; none: PyTorch's CPU index)",
    "PIP_FIND_LINKS": "run --runner container: where pip finds local wheels (the image build "
    "takes torch from there)",
    "KFP_HOST": "Kubeflow Pipelines API URL",
    "KFP_TOKEN": "bearer token for the KFP API (optional)",
    "KFP_NAMESPACE": "KFP namespace (default kubeflow)",
    "KFP_UI_HOST": "base URL of the KFP UI in printed links (default KFP_HOST)",
    "KUBECONFIG": "kube config file (default ~/.kube/config; in a pod: its ServiceAccount)",
    "KUBERNETES_SERVICE_HOST": "set inside a pod: fall back to the in-cluster config",
}
_STORE = ("CLOUDML_STORE", "MINIO_ENDPOINT", "MINIO_SECURE", "MINIO_ACCESS_KEY",
          "MINIO_SECRET_KEY", "MINIO_REGION", "CLOUDML_STORE_RETRIES",
          "CLOUDML_STORE_RETRY_SECONDS")  # fmt: skip
_IMAGES = ("CLOUDML_REGISTRY", "CLOUDML_TAG", "CLOUDML_GPU_NODE_LABEL", "CLOUDML_GPU_TAINT",
           "CLOUDML_GPU_PARALLELISM")  # fmt: skip
_KFP = ("KFP_HOST", "KFP_TOKEN", "KFP_NAMESPACE", "KFP_UI_HOST")

EXIT_CODES = f"""exit codes:
  {EXIT_OK}    success (gate: the model passed)
  {EXIT_ERROR}    the command failed: one `error: ...` line names the file, key or endpoint
       at fault (bad input, configuration, environment), or the gate did not pass
  {EXIT_USAGE}    usage error: unknown option, missing or malformed argument (argparse)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
  {EXIT_BROKEN_PIPE}  stdout was closed early (e.g. `cloudml config | head -1`)"""


class Command(NamedTuple):
    module: str  # defines add_command(subparsers), which adds this command's parser
    help: str  # the line `cloudml --help` shows; the same text the module's parser has
    env: tuple[str, ...] = ()  # environment variables its code path reads (ENV_VARS)


COMMANDS: dict[str, Command] = {
    "config": Command("cloudml.config_cli", "print the resolved configuration as JSON"),
    "compile": Command("cloudml.cluster.submit", "compile a preset's pipeline to YAML", _IMAGES),
    "submit": Command(
        "cloudml.cluster.submit", "compile, upload and start a run on $KFP_HOST", _KFP + _IMAGES
    ),
    "schedule": Command(
        "cloudml.cluster.submit",
        "recurring run on $KFP_HOST (six-field cron, UTC)",
        _KFP + _IMAGES,
    ),
    "gate": Command(
        "cloudml.gate", "fail (exit 1) unless R² in a metrics.json beats the threshold"
    ),
    "run": Command(
        "cloudml.cluster.local_run",
        "run a pipeline on KFP's local runner (embedded default)",
        _STORE
        + ("PUSHGATEWAY_URL", "CLOUDML_COMMIT", "CLOUDML_THREADS", "CLOUDML_CPU_REQUEST")
        + ("CLOUDML_NO_JEMALLOC",)
        + ("TORCH_WHEELS", "PIP_FIND_LINKS")
        + _IMAGES,
    ),
    "pretrain": Command(
        "cloudml.training.stages",
        "train on the pretrain flight",
        ("CLOUDML_THREADS", "CLOUDML_CPU_REQUEST", "CLOUDML_NO_JEMALLOC"),
    ),
    "finetune": Command(
        "cloudml.training.stages",
        "finetune on all training flights",
        ("CLOUDML_THREADS", "CLOUDML_CPU_REQUEST", "CLOUDML_NO_JEMALLOC"),
    ),
    "evaluate": Command(
        "cloudml.evaluate",
        "metrics of a checkpoint on the validation flight",
        ("CLOUDML_THREADS", "CLOUDML_CPU_REQUEST", "CLOUDML_NO_JEMALLOC"),
    ),
    "synth": Command(
        "cloudml.data.synth", "write the synthetic six-flight campaign in the raw layout"
    ),
    "upload": Command(
        "cloudml.store.cli",
        "upload a directory to s3://bucket/prefix (or a path) with a sha256 manifest",
        _STORE,
    ),
    "ingest": Command("cloudml.data.ingest", "raw flight files -> processed shard (one flight)"),
    "preflight": Command(
        "cloudml.cluster.preflight",
        "check the cluster is ready for `make submit`",
        ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"),
    ),
}


def env_epilog(names: tuple[str, ...]) -> str:
    """The --help section listing the environment variables a command reads."""
    if not names:
        return "environment variables: none read by this command"
    width = max(map(len, names))
    return "environment variables read:\n" + "\n".join(
        f"  {n:<{width}}  {ENV_VARS[n]}" for n in names
    )


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand named in argv: its first word that is not an option (the top-level
    options take no values), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def _placeholder(name: str):
    def run(args: argparse.Namespace) -> int:
        raise RuntimeError(f"cloudml {name}: its module was not loaded (a bug in cloudml/cli.py)")

    return run


def _finish(p: argparse.ArgumentParser, cmd: Command) -> None:
    """What every command's parser shares: -v after the command name (SUPPRESS keeps a -v
    given before it), the environment it reads and the exit codes in its --help."""
    if "-v" not in p._option_string_actions:
        p.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the epilog's lines
    p.epilog = "\n\n".join(x for x in (p.epilog, env_epilog(cmd.env), EXIT_CODES) if x)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser: `command`'s module adds its real parser(s), every other
    command a placeholder with its help line (enough to list it, or to reject a typo)."""
    parser = argparse.ArgumentParser(
        prog="cloudml",
        description=__doc__.splitlines()[0],
        epilog=EXIT_CODES + "\n\n`cloudml COMMAND --help` lists a command's options and "
        "the environment variables it reads.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    for name, cmd in COMMANDS.items():
        _finish(sub.choices[name], cmd)
    return parser


def _stdout_closed() -> int:
    """The reader of stdout went away (`| head`): the standard handling
    (docs.python.org, signal, 'Note on SIGPIPE'): point stdout at devnull so the flush at
    exit cannot raise again, and exit quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the process's own command line (not a call from Python code or a test)
        # under jemalloc however it was started (cloudml.allocator); returns when it already is
        reexec_under_jemalloc(["-m", "cloudml", *sys.argv[1:]])
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(chosen_command(argv)).parse_args(argv)  # usage errors: exit 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        # before any command imports torch: OpenMP threads = the CPUs this process may use
        # (CLOUDML_THREADS, cgroup quota, affinity), inherited by the local runner's tasks
        prepare_process_env()
        rc = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at exit
    except BrokenPipeError:
        return _stdout_closed()
    except CloudMLError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # the file system or network refused something no check foresaw
        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
