"""Which exceptions are the user's to fix (shown as one line) and which are our bugs (traceback)."""

from __future__ import annotations

import json
import traceback

_USER_ERRORS = {
    "ConfigError",
    "StoreError",
    "ClientError",
    "StepError",
    "OptimizerError",
    "OptimizeeError",
    "PoolError",
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
