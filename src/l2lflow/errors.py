"""Which exceptions are the user's to fix (shown as one line) and which are our bugs (traceback)."""

from __future__ import annotations

import errno
import json
import traceback
from pathlib import Path

_USER_ERRORS = {
    "ConfigError",
    "StoreError",
    "ClientError",
    "StepError",
    "OptimizerError",
    "OptimizeeError",
    "PoolError",
    "GenerationFailed",
}


def is_user_error(exc: BaseException) -> bool:
    """True for l2lflow's own error types and for missing files: print them, no traceback."""
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return True
    return type(exc).__name__ in _USER_ERRORS and type(exc).__module__.startswith("l2lflow")


#: libraries whose failures while reading mean: the bytes on disk are damaged, not our bug
_STORE_READERS = ("zarr/", "numcodecs/")


def is_store_damage(exc: BaseException) -> bool:
    """True if ``exc`` came from decoding a results store's files (a truncated chunk, metadata
    that is not JSON): the user's to repair, so shown as one line that points to ``l2lflow
    check`` instead of a traceback through zarr's internals."""
    if isinstance(exc, json.JSONDecodeError):
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    # raised inside the codecs/decoders (our bugs raise in our frames, or in zarr's API calls)
    return bool(frames) and any(m in frames[-1].filename for m in _STORE_READERS)


#: what a refused write means, by errno, in the user's words
_DISK_REFUSALS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
}


def disk_problem(exc: BaseException, results: str | Path | None = None) -> str | None:
    """One line for a write the disk refused (full, over quota, read-only, no permission), with
    the path and what to do; None for any other error.

    Without this a full disk mid-run read "the results store does not decode" (zarr raised it
    while writing a chunk), which sends the user to look for damage instead of space.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_REFUSALS:
            where = exc.filename or results or "the results folder"
            return (
                f"{where}: {_DISK_REFUSALS[exc.errno]} while writing the results; make room "
                "(or fix the permissions) there, or set 'results' to another disk, then rerun "
                "the same command to resume"
            )
        exc = exc.__cause__ or exc.__context__
    return None
