"""Small file helpers: the one input-path check and the one output-path check every command
uses, atomic writes (raw and JSON), sha256."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cloudml.errors import CloudMLError, DataError, StorageError


# --- reading ----------------------------------------------------------------------------------
def input_problem(path: str | Path) -> str | None:
    """Why `path` cannot be read as a regular file ("does not exist", "is a directory", ...),
    or None when it can. Tells a missing file from a directory, a symlink loop, a dangling
    symlink, a file in place of a parent directory and a permission problem, which an
    `is_file()` test lumps together as "does not exist"."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symlink loop (the link resolves back to itself)"
        if e.errno == errno.ENOTDIR:
            return "does not exist (a parent of it is a file, not a directory)"
        if e.errno == errno.EACCES:
            return "cannot be reached (permission denied on a parent directory)"
        if os.path.lexists(path):
            return f"is a dangling symlink (its target {os.readlink(path)} does not exist)"
        return "does not exist"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, expected a file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if not os.access(path, os.R_OK):
        return "is not readable (permission denied)"
    return None


def check_input_file(
    path: str | Path, what: str = "file", error: type[CloudMLError] = DataError
) -> Path:
    """`path` when it is a readable regular file; otherwise `error` "<path>: <what> <why>"."""
    path = Path(path)
    if (problem := input_problem(path)) is not None:
        raise error(f"{path}: {what} {problem}")
    return path


# --- writing ----------------------------------------------------------------------------------
def _blocking_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` when it is not a directory (a file in the way)."""
    for parent in path.parents:
        if os.path.lexists(parent):
            return None if parent.is_dir() else parent
    return None


def check_output_file(path: str | Path) -> Path:
    """`path` when a file can be written there: not an existing directory, no file in place of
    one of its parent directories. StorageError naming the path otherwise. Nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise StorageError(
            f"cannot write {path}: it is an existing directory, expected a file path"
        )
    if (blocker := _blocking_ancestor(path)) is not None:
        raise StorageError(
            f"cannot write {path}: output directory {path.parent} is not writable "
            f"({blocker} is a file, not a directory)"
        )
    return path


def check_output_dir(path: str | Path) -> Path:
    """`path` when a directory can be created or used there (not an existing file, no file in
    place of a parent). StorageError naming the path otherwise. Nothing is created."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise StorageError(
            f"cannot write into {path}: it is an existing file, expected a directory path"
        )
    if (blocker := _blocking_ancestor(path)) is not None:
        raise StorageError(f"cannot write into {path}: {blocker} is a file, not a directory")
    return path


def ensure_output_dir(path: str | Path) -> Path:
    """Create the output directory `path` (and its parents) after check_output_dir."""
    path = check_output_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # read-only mount, no permission
        raise StorageError(
            f"cannot write into {path}: {e.strerror or type(e).__name__} ({e.filename})"
        ) from None
    return path


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` only if the block succeeds.

    A failure (or a kill) never leaves `dest` half-written: either the old file stays or the
    new one is complete. The temporary file is removed on error. `dest` is checked first
    (check_output_file), so a directory in its place fails before any work is done.
    """
    dest = check_output_file(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as e:  # read-only mount, no permission: name the path
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


def describe_os_error(e: OSError) -> str:
    """One line for an OSError the code did not foresee: what failed and on which path(s)."""
    what = e.strerror or type(e).__name__
    paths = [p for p in (e.filename, e.filename2) if p is not None]
    return f"{' -> '.join(map(str, paths))}: {what}" if paths else f"{what} ({e})"
