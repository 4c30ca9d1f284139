"""l2lflow: learning-to-learn experiments with spiking networks, on a laptop or on JUWELS.

Kept import-light on purpose (the per-generation ``l2lflow step`` client imports this package):
the public helpers are loaded on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["open_results", "load_config", "Experiment", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "open_results":
        import l2lflow.accessor  # noqa: F401  (registers the ds.l2l accessor)
        from l2lflow.store import open_results

        return open_results
    if name == "load_config":
        from l2lflow.config import load_config

        return load_config
    if name == "Experiment":
        from l2lflow.experiment import Experiment

        return Experiment
    raise AttributeError(f"module 'l2lflow' has no attribute {name!r}")
