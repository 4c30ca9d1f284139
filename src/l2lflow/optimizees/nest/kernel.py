"""One NEST kernel per process, reset, seeded and run in a way that suits Dask workers.

Why this module exists:

* ``import nest`` costs ~0.6 s and prints a banner, so it is imported lazily, once, with
  ``PYNEST_QUIET=1`` and verbosity ERROR (set once; it survives ``ResetKernel``).
* ``nest.ResetKernel()`` silently sets ``local_num_threads`` back to 1 and ``rng_seed`` back to a
  constant, so :func:`reset_kernel` sets both after *every* reset; otherwise two evaluations with
  different seeds would share their randomness.
* ``nest.Simulate`` holds the GIL for the whole run and a Dask worker then stops heartbeating, so
  :func:`simulate` runs in ~10 ms chunks under ``nest.RunManager()``.
* NEST's kernel writes its messages (e.g. "not an integer multiple of the minimal delay") from C++
  straight to file descriptor 2, bypassing Python. :func:`capture_nest_messages` redirects fd 2
  into a temporary file while NEST runs and forwards NEST's lines to a :mod:`logging` logger (the
  evaluation's ``context.log``), so they reach the experiment's log instead of a worker's stderr.
* A NEST kernel is process-global state: two threads using it at once give wrong results silently.
  :func:`nest_session` holds a process-wide lock for a whole evaluation.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from l2lflow.seeds import NEST_SEED_MAX, nest_seed

__all__ = [
    "NEST_SEED_MAX",
    "capture_nest_messages",
    "chunk_plan",
    "get_nest",
    "nest_available",
    "nest_seed",
    "nest_session",
    "reset_kernel",
    "simulate",
]

_log = logging.getLogger("l2lflow.nest")


_nest: ModuleType | None = None
_import_lock = threading.Lock()
#: held for a whole evaluation by :func:`nest_session`; re-entrant so helpers can nest
_kernel_lock = threading.RLock()


def get_nest() -> ModuleType:
    """Import NEST once per process, quietly, and return the module."""
    global _nest
    if _nest is None:
        with _import_lock:
            if _nest is None:
                os.environ["PYNEST_QUIET"] = "1"
                import nest  # lazy on purpose: 0.6 s and 130 MB

                nest.verbosity = nest.VerbosityLevel.ERROR
                _nest = nest
    return _nest


def nest_available() -> bool:
    """Whether ``import nest`` works here (without keeping a failed import around)."""
    try:
        get_nest()
    except Exception:  # ImportError, or a broken installation failing at import
        return False
    return True


def reset_kernel(seed: int, threads: int = 1, resolution: float = 0.1) -> ModuleType:
    """``ResetKernel`` and set resolution, threads and seed (all three are lost on reset).

    Results are bit-identical for the same ``seed`` *and* ``threads``; a different thread count
    changes the random streams, so ``threads`` is part of an evaluation's identity.
    """
    nest = get_nest()
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    nest.ResetKernel()
    nest.set(
        resolution=float(resolution),
        local_num_threads=threads,
        rng_seed=nest_seed(seed),
    )
    return nest


def _steps(t_ms: float, resolution: float, what: str) -> int:
    steps = round(t_ms / resolution)
    if steps < 0 or not np.isclose(steps * resolution, t_ms, rtol=0.0, atol=1e-6 * resolution):
        raise ValueError(
            f"{what} = {t_ms} ms is not a non-negative multiple of the resolution {resolution} ms"
        )
    return steps


def chunk_plan(t_ms: float, chunk_ms: float, resolution: float, min_delay: float) -> list[float]:
    """The chunk lengths (ms) :func:`simulate` runs: they sum exactly to ``t_ms``.

    Chunks are whole multiples of NEST's ``min_delay`` (itself a multiple of the resolution), as
    close to ``chunk_ms`` as possible, so that chunking changes nothing about the result (NEST
    warns, and may differ, when a run ends inside a min-delay slice); only the last chunk may be
    shorter, and only it can end off a min-delay boundary, as a single ``Simulate`` would.
    """
    total = _steps(t_ms, resolution, "simulation time")
    slice_steps = max(1, round(min_delay / resolution))
    chunk_steps = max(1, round(chunk_ms / (slice_steps * resolution))) * slice_steps
    plan = [chunk_steps] * (total // chunk_steps)
    if total % chunk_steps:
        plan.append(total % chunk_steps)
    return [n * resolution for n in plan]


def simulate(t_ms: float, chunk_ms: float = 10.0, *, log: logging.Logger | None = None) -> None:
    """Advance the network by exactly ``t_ms`` in ~``chunk_ms`` pieces (see :func:`chunk_plan`).

    Between chunks NEST releases the GIL, so the Dask worker's event loop keeps heartbeating.
    NEST messages during the run go to ``log`` (see :func:`capture_nest_messages`).
    """
    nest = get_nest()
    plan = chunk_plan(t_ms, chunk_ms, nest.resolution, nest.min_delay)
    if not plan:
        return
    with capture_nest_messages(log), nest.RunManager():
        for chunk in plan:
            nest.Run(chunk)


# --- NEST's messages ------------------------------------------------------------------------

#: "[WARNING] [2026-12-01 02:29:58] text" (the date part is absent in some NEST builds)
_MESSAGE = re.compile(r"^\[(?P<level>[A-Z]+)\]\s*(?:\[[^\]]*\]\s*)?(?P<text>.*)$")
_LEVELS = {
    "ALL": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "STATUS": logging.INFO,
    "INFO": logging.INFO,
    "PROGRESS": logging.INFO,
    "DEPRECATED": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
}
_capture_depth = 0
_capture_lock = threading.Lock()


def _flush_c_streams() -> None:
    """Flush C stdio buffers so nothing written before/while capturing lands in the wrong file."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


def _forward(text: str, log: logging.Logger, passthrough: int) -> None:
    """Send NEST's lines to ``log``; give anything else back to the real stderr, unchanged.

    Other threads of the process (a Dask worker's own logging) may write to stderr while it is
    redirected; those lines must not be swallowed or mislabelled as NEST's.
    """
    other: list[str] = []
    level, parts = None, []

    def emit() -> None:
        if level is not None:
            log.log(_LEVELS.get(level, logging.WARNING), "NEST %s: %s", level, " ".join(parts))

    for line in text.splitlines():
        match = _MESSAGE.match(line.strip())
        if match and match["level"] in _LEVELS:
            emit()
            level, parts = match["level"], [match["text"].strip()]
        elif level is not None and line.startswith((" ", "\t")) and line.strip():
            parts.append(line.strip())  # continuation of a wrapped NEST message
        else:
            emit()
            level, parts = None, []
            other.append(line)
    emit()
    rest = "\n".join(line for line in other if line)
    if rest:
        with contextlib.suppress(OSError):
            os.write(passthrough, (rest + "\n").encode(errors="replace"))


@contextlib.contextmanager
def capture_nest_messages(log: logging.Logger | None = None) -> Iterator[None]:
    """Forward NEST's kernel messages and Python warnings raised inside the block to ``log``.

    NEST's verbosity is raised to WARNING inside the block (and restored after) so that warnings
    are produced at all; INFO chatter stays off. Nested uses capture once, in the outermost
    block, whose ``log`` receives everything. The redirection is of file descriptor 2 into a
    temporary file (not a pipe, which could fill up and block NEST); lines that are not NEST's
    (another thread's logging) are written back to the real stderr when the block ends.
    """
    global _capture_depth
    log = log or _log
    nest = get_nest()
    with _capture_lock:
        outer = _capture_depth == 0
        _capture_depth += 1
    try:
        if outer:
            with _redirect_stderr(nest, log):
                yield
        else:
            yield
    finally:
        with _capture_lock:
            _capture_depth -= 1


@contextlib.contextmanager
def _redirect_stderr(nest: ModuleType, log: logging.Logger) -> Iterator[None]:
    """The actual capture of :func:`capture_nest_messages` (outermost block only)."""
    sys.stderr.flush()
    _flush_c_streams()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemonised process): nothing to capture
        yield
        return
    old_verbosity = nest.verbosity
    try:
        nest.verbosity = nest.VerbosityLevel.WARNING
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                # also on an exception: NEST's messages often explain the error
                sys.stderr.flush()
                _flush_c_streams()
                os.dup2(saved, 2)
                sink.seek(0)
                _forward(sink.read().decode(errors="replace"), log, saved)
                for w in caught:
                    log.warning(
                        "%s: %s (%s:%s)", w.category.__name__, w.message, w.filename, w.lineno
                    )
    finally:
        os.dup2(saved, 2)  # a no-op normally; restores stderr if the block above failed early
        os.close(saved)
        nest.verbosity = old_verbosity


@contextlib.contextmanager
def nest_session(
    seed: int,
    threads: int = 1,
    resolution: float = 0.1,
    log: logging.Logger | None = None,
) -> Iterator[ModuleType]:
    """A whole evaluation's use of the kernel: lock, reset + seed, capture messages.

    ``with nest_session(context.seed, context.threads, log=context.log) as nest:`` gives a clean,
    seeded kernel that no other thread of this process can touch until the block ends.
    """
    with _kernel_lock:
        nest = reset_kernel(seed, threads, resolution)
        with capture_nest_messages(log):
            yield nest
