"""How a run's steps talk to the display that watches them (stdlib only: a step starts in ms).

The Snakemake logger plugin (:mod:`snakemake_logger_plugin_l2lflow`) sets ``L2LFLOW_DISPLAY_DIR``
to a private folder before the first job starts; every job inherits it. A step
(``l2lflow step ...``) that finds it

* writes the engine's progress messages to ``DIR/progress.json`` (replaced atomically, at most
  a few times a second), which the display reads when it redraws, so nothing is parsed from a
  terminal and nothing is drawn by two processes at once;
* sends its own stderr (errors, warnings) to ``DIR/steps.log``, which the display shows in full
  beside the failed job, instead of writing through the live view.

Without the variable (``snakemake --logger ...`` of another plugin, a step run by hand) a step
draws its own progress as before.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ENV = "L2LFLOW_DISPLAY_DIR"
PROGRESS_FILE = "progress.json"
STEPS_LOG = "steps.log"
#: at most this often a progress file is rewritten (the last message of a step always is)
WRITE_INTERVAL_S = 0.25


def display_dir() -> Path | None:
    """The display's folder when a display watches this run, else None."""
    value = os.environ.get(ENV)
    return Path(value) if value and os.path.isdir(value) else None


def redirect_stderr() -> None:
    """Send this process's stderr to the display's steps log (no-op without a display)."""
    folder = display_dir()
    if folder is None:
        return
    sys.stderr.flush()
    fd = os.open(folder / STEPS_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 2)
    os.close(fd)


class ProgressFile:
    """Writes progress messages (dicts) to the display's progress file; same API as a view."""

    def __init__(self, folder: Path, results: str | Path) -> None:
        self.path = folder / PROGRESS_FILE
        self.results = str(results)
        self.last = 0.0

    def update(self, progress: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self.last < WRITE_INTERVAL_S and progress.get("running", 0) != 0:
            return
        self.last = now
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        payload = {**progress, "results": self.results, "written": time.time()}
        tmp.write_text(json.dumps(payload, allow_nan=True))
        os.replace(tmp, self.path)

    def close(self) -> None:
        pass


def read_progress(folder: Path) -> dict[str, Any] | None:
    """The last progress message a step wrote, or None (none yet, or mid-replace)."""
    try:
        return json.loads((folder / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
