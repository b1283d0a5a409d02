"""Small file helpers: atomic writes (raw and JSON), sha256."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cloudml.errors import StorageError


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` only if the block succeeds.

    A failure (or a kill) never leaves `dest` half-written: either the old file stays or the
    new one is complete. The temporary file is removed on error.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as e:  # a file in the way, read-only mount, no permission: name the path
        raise StorageError(
            f"cannot write {dest}: output directory {dest.parent} is not writable "
            f"({e.strerror or type(e).__name__}: {e.filename})"
        ) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, obj: Any, *, end: str = "\n", **dumps_options: Any) -> None:
    """Write `json.dumps(obj, **dumps_options) + end` to `path` atomically (see atomic_path).

    The bytes are exactly those options' output: the training stages write
    `write_json(p, obj, indent=2)` (trailing newline), the pipeline steps
    `write_json(p, obj, end="", indent=2, sort_keys=True, default=str)`.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, **dumps_options) + end)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
