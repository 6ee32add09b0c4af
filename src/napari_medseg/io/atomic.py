"""Atomic file replacement: write beside the target, then rename into place.

A crash or an error halfway through a save leaves the old file (or no file) intact, never a
truncated one. The temporary name keeps the target's suffix because the writers choose the format
(and gzip compression) from it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def split_suffix(path: str | os.PathLike) -> tuple[str, str]:
    """('dir/name', '.nii.gz') for 'dir/name.nii.gz'; double suffixes handled for .nii.gz."""
    p = str(path)
    lower = p.lower()
    for suffix in (".nii.gz", ".nhdr", ".nrrd", ".nii", ".mha", ".mhd"):
        if lower.endswith(suffix):
            return p[: -len(suffix)], p[-len(suffix):]
    root, ext = os.path.splitext(p)
    return root, ext


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``.

    On any exception the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"{target}: the folder {directory} does not exist")
    _, suffix = split_suffix(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=directory)
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes 0600 files; give the result the mode a plain open() would (or the old file's)
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
