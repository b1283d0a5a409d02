"""`cloudml upload`: publish a local directory to the store with a sha256 manifest.

cloudml upload --src data/raw --dest s3://cloudml/raw --per-dir   # raw/<flight>/manifest.json
cloudml upload --src build/run --dest /tmp/store/runs/x           # a directory works too
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cloudml.errors import StorageError
from cloudml.fileio import check_output_dir, input_problem
from cloudml.store.backends import LocalStore, S3Store, open_store
from cloudml.store.layout import is_remote, split_remote
from cloudml.store.manifest import upload_dir


def _upload_cmd(args: argparse.Namespace) -> int:
    """Upload --src under --dest: one manifest, or one per subdirectory with --per-dir."""
    dest = args.dest
    src = Path(args.src)
    if not src.is_dir():  # name what is there instead: missing, a file, a loop
        why = input_problem(src) or "it is a file"
        raise StorageError(f"--src {src} is not a directory ({why.removeprefix('is ')})")
    if is_remote(dest):
        bucket, prefix = split_remote(dest)
        store = open_store(f"s3://{bucket}")
        if isinstance(store, S3Store):
            store.ensure_bucket()
    else:
        check_output_dir(dest)
        store, prefix = LocalStore(Path(dest).parent), Path(dest).name
    subdirs = sorted(p for p in src.iterdir() if p.is_dir()) if args.per_dir else []
    if subdirs:
        for d in subdirs:
            upload_dir(store, d, f"{prefix}/{d.name}".strip("/"), progress=True)
    else:
        if not prefix.strip("/"):
            raise StorageError(f"--dest {dest!r}: give a prefix (e.g. s3://bucket/raw/30Oct24)")
        upload_dir(store, src, prefix, progress=True)
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    """Add the `upload` subcommand to the `cloudml` parser."""
    p = sub.add_parser(
        "upload",
        help="upload a directory to s3://bucket/prefix (or a path) with a sha256 manifest",
    )
    p.add_argument("--src", required=True, metavar="DIR", help="local directory to upload")
    p.add_argument("--dest", required=True, metavar="URI",
                   help="s3://bucket/prefix (MINIO_* variables) or a local directory path")  # fmt: skip
    p.add_argument(
        "--per-dir",
        action="store_true",
        help="one manifest per subdirectory of --src (a campaign: raw/<flight>/manifest.json)",
    )
    p.set_defaults(func=_upload_cmd)
