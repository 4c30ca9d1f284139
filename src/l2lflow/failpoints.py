"""Named points where the crash tests stop a process, so that a kill lands exactly there.

Why: a kill after a random delay rarely lands inside the few milliseconds in which a step writes
the store, so the crash-safety of those writes would go untested. The store's writers call
:func:`reach` at every point where a kill could leave the store half-written; the tests set

* ``L2LFLOW_FAILPOINT=<point>[@<generation>][#<k>]``: which point, optionally only for one
  generation, and the k-th time it is reached in this process (default: the first);
* ``L2LFLOW_FAILPOINT_FILE=<path>``: where to announce that the point was reached.

On reaching it, the process writes ``<path>`` and waits: until it is killed, so the test can
SIGKILL the whole run (Snakemake, the engine, its workers) at that moment, or until the test
creates ``<path>.go``, which lets it go on (e.g. after the test stopped Snakemake, to kill the
run just after the step finished). Without the variables (every real run), :func:`reach`
returns at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_SPEC = os.environ.get("L2LFLOW_FAILPOINT", "")
_hits: dict[tuple[str, int | None], int] = {}


def _parse(spec: str) -> tuple[str, int | None, int]:
    """(point, generation or None, k) of ``point[@generation][#k]``."""
    rest, _, k = spec.partition("#")
    point, _, generation = rest.partition("@")
    return point, int(generation) if generation else None, int(k) if k else 1


def reach(point: str, generation: int | None = None) -> None:
    """Stop here (until killed) if the test armed this point; otherwise do nothing."""
    if not _SPEC:
        return
    want, want_generation, k = _parse(_SPEC)
    if point != want or (want_generation is not None and generation != want_generation):
        return
    key = (point, generation)
    _hits[key] = _hits.get(key, 0) + 1
    if _hits[key] != k:
        return
    announce = os.environ.get("L2LFLOW_FAILPOINT_FILE")
    if not announce:
        while True:  # nobody is told: wait for the kill
            time.sleep(3600)
    tmp = Path(f"{announce}.tmp")
    tmp.write_text(f"{_SPEC} {os.getpid()}\n")
    os.replace(tmp, announce)
    go = Path(f"{announce}.go")
    while not go.exists():  # the test kills this process now, or lets it go on
        time.sleep(0.01)
