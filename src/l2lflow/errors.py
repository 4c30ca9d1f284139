"""Which exceptions are the user's to fix (shown as one line) and which are our bugs (traceback)."""

from __future__ import annotations

_USER_ERRORS = {
    "ConfigError",
    "StoreError",
    "ClientError",
    "StepError",
    "OptimizerError",
    "OptimizeeError",
}


def is_user_error(exc: BaseException) -> bool:
    """True for l2lflow's own error types and for missing files: print them, no traceback."""
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return True
    return type(exc).__name__ in _USER_ERRORS and type(exc).__module__.startswith("l2lflow")
