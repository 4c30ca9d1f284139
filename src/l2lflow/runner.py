"""Runs evaluations on a worker, each inside a long-lived *sandbox* process.

Why a sandbox: an optimizee may raise, return NaN, hang in C code, or kill its process
(``os.abort()``, a segfault in a simulator). The Dask worker thread only talks to the sandbox
over a pipe and waits with a timeout, so it can kill a hung evaluation, notice a crashed one,
and record either as a failed evaluation with its reason, while the worker itself stays alive
and keeps heartbeating. The sandbox lives as long as its worker (NEST is imported once per
worker, not once per evaluation), is restarted after a crash or timeout, and dies with its
worker, so it can never be orphaned.

Nothing an optimizee starts outlives its sandbox either (a ``subprocess``, a forked grandchild,
a ``setsid`` daemon):

- each sandbox is a session and process group of its own, killed as a group;
- it is a child subreaper (``PR_SET_CHILD_SUBREAPER``): orphaned descendants are reparented to
  it, not to init, so they stay in its process tree;
- its parent-death signal (``PR_SET_PDEATHSIG``, SIGKILL) fires when the *thread* that started
  it ends, not the process: sandboxes are therefore started from one spawner thread that lives
  as long as the worker (a Dask executor thread may end long before its worker);
- a tiny *guard* process beside it (a child in a session of its own) waits for the sandbox to
  die, however it dies (timeout, crash, worker killed), then kills the sandbox's process group
  and every process that carries the sandbox's token (``L2LFLOW_SANDBOX`` in its environment,
  inherited by all descendants, also by ``setsid`` ones that left the group).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

DONE, FAILED = 1, 2


@dataclass(frozen=True)
class EvaluationSpec:
    """What every evaluation of an experiment shares (sent with each chunk; small and picklable)."""

    optimizee: str
    options: dict[str, Any] = field(default_factory=dict)
    fitness_key: str = "fitness"
    timeout_s: float | None = None
    threads: int = 1
    experiment_seed: int = 0
    scratch_root: str | None = None
    #: run in a sandbox process (timeouts and crash isolation); False runs in the worker itself
    isolate: bool = True
    #: the optimizee evaluates a whole chunk in one call (see optimizees.base)
    batched: bool = False
    #: (metric, factor) pairs: fitness = sum of factor * metric (multi-objective experiments)
    objectives: tuple[tuple[str, float], ...] = ()


# ---------------------------------------------------------------------------- one evaluation
_RESOLVED: dict[str, Any] = {}


def _optimizee(ref: str):
    if ref not in _RESOLVED:
        from l2lflow.optimizees.base import resolve_optimizee

        _RESOLVED[ref] = resolve_optimizee(ref)
    return _RESOLVED[ref]


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _failure(
    item: Mapping[str, Any],
    reason: str,
    error: str,
    runtime: float,
    log: str = "",
    metrics: dict[str, float] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
) -> dict:
    """The result record of a failed evaluation; ``metrics`` and ``arrays`` are what a completed
    evaluation returned beside a non-finite fitness (stored with it: they say what went wrong)."""
    return {
        "individual": item["individual"],
        "ok": False,
        "reason": reason,
        "error": error,
        "log": log,
        "runtime": runtime,
        "fitness": math.nan,
        "metrics": dict(metrics or {}),
        "arrays": dict(arrays or {}),
    }


def _success(
    item: Mapping[str, Any],
    fitness: float,
    metrics: dict[str, float],
    arrays: dict[str, np.ndarray],
    runtime: float,
    log: str,
) -> dict:
    """The result record of an evaluation that gave a finite fitness (twin of ``_failure``)."""
    return {
        "individual": item["individual"],
        "ok": True,
        "fitness": fitness,
        "metrics": metrics,
        "arrays": arrays,
        "runtime": runtime,
        "error": "",
        "log": log,
    }


#: the store's own variables: an optimizee's array, stored under its own name, may not take one
STORE_VARIABLES = frozenset(
    {
        "generation",
        "individual",
        "fitness",
        "status",
        "seed",
        "runtime",
        "attempts",
        "finished_at",
        "worker",
        "error",
        "log",
        "optimizer",
        "objective",
        "objectives",
        "pareto_rank",
    }
)
#: prefixes of variables the store derives from results (scalar metrics, meta-test results)
RESERVED_PREFIXES = ("metric_", "meta_test")


class ResultError(ValueError):
    """An optimizee's return value that cannot be stored (bad key, type or shape). It is
    deterministic, so the evaluation fails at once instead of being retried."""


def _check_key(key: Any, is_array: bool, parameters: frozenset[str]) -> str:
    """``key`` if it can name a result in the store, else a :class:`ResultError` with the rule."""
    if not isinstance(key, str) or not key.isidentifier():
        raise ResultError(
            f"result key {key!r}: a result key must be a Python identifier (letters, digits "
            "and '_', not starting with a digit; no dots, path separators or spaces)"
        )
    if not is_array:
        return key  # scalar metrics are stored as metric_<key>: no clash possible
    rule = (
        f"result {key!r} is an array, stored under its own name, which {{}}; rename it "
        f"(scalar results are stored as metric_<key> and may use any identifier)"
    )
    if key in STORE_VARIABLES:
        raise ResultError(rule.format("is a variable of the store itself"))
    if key in parameters:
        raise ResultError(rule.format("is a parameter of the space"))
    if key.startswith(RESERVED_PREFIXES):
        raise ResultError(
            rule.format(f"starts with a reserved prefix ({', '.join(RESERVED_PREFIXES)})")
        )
    return key


def _number(key: str, value: Any) -> np.ndarray:
    """``value`` as a numeric array; bools as fitness or metric and non-numbers are refused."""
    if isinstance(value, (str, bytes)) or value is None:
        raise ResultError(f"result {key!r} is {type(value).__name__}, expected a number or array")
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ResultError(f"result {key!r} has dtype {arr.dtype}, expected numbers")
    if arr.ndim == 0 and arr.dtype.kind == "b":
        raise ResultError(
            f"result {key!r} is a bool ({value!r}): fitness and metrics must be numbers "
            "(return 1.0/0.0 if that is what you mean)"
        )
    return arr


def _normalise(
    value: Any,
    fitness_key: str,
    objectives: tuple[tuple[str, float], ...] = (),
    parameters: frozenset[str] = frozenset(),
) -> tuple[float, dict[str, float], dict[str, np.ndarray]]:
    """Turn an optimizee's return value into (fitness, scalar metrics, arrays).

    Raises :class:`ResultError` for a value that cannot be stored: a key that is not an
    identifier (it becomes a variable name in the store), an array named like a variable of the
    store or a parameter, a bool as fitness or metric, or anything that is not a number/array.
    """
    if objectives:
        if not isinstance(value, Mapping):
            raise ResultError(
                "with optimizee.objectives the optimizee must return a dict of metrics"
            )
        missing = [name for name, _ in objectives if name not in value]
        if missing:
            raise ResultError(
                f"the optimizee returned no objective {missing[0]!r} "
                f"(returned: {', '.join(map(str, value))})"
            )
        _, metrics, arrays = _normalise(
            {**value, "__fitness__": 0.0}, "__fitness__", (), parameters
        )
        for name, _ in objectives:
            if name not in metrics:
                raise ResultError(f"objective {name!r} is an array, expected a scalar")
            if not math.isfinite(metrics[name]):
                return float("nan"), metrics, arrays
        return sum(f * metrics[name] for name, f in objectives), metrics, arrays
    metrics: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    if isinstance(value, Mapping):
        for key, v in value.items():
            arr = _number(str(key), v)
            name = _check_key(key, arr.ndim > 0 and key != fitness_key, parameters)
            if arr.ndim == 0:
                metrics[name] = float(arr)
            else:
                arrays[name] = arr.astype(np.float64) if arr.dtype.kind != "b" else arr
        if fitness_key not in metrics:
            raise ResultError(
                f"the optimizee returned no scalar {fitness_key!r} "
                f"(returned: {', '.join(map(str, value)) or 'nothing'}); "
                "set optimizee.fitness to the metric to optimise"
            )
        fitness = metrics.pop(fitness_key)
    else:
        if isinstance(value, (str, bytes)) or value is None:
            raise ResultError(
                f"the optimizee returned {type(value).__name__}, expected a number or dict"
            )
        arr = _number("fitness", value)
        if arr.ndim != 0:
            raise ResultError(
                f"the optimizee returned an array of shape {arr.shape}; a fitness is a "
                "number (return a dict to store arrays beside it)"
            )
        fitness = float(arr)
    return fitness, metrics, arrays


_EVALUATION_LOG = logging.getLogger("l2lflow.evaluation.current")
_EVALUATION_LOG.propagate = False
_EVALUATION_LOG.setLevel(logging.INFO)


def _context(spec: EvaluationSpec, item: Mapping[str, Any], log: logging.Logger) -> Any:
    """The ``EvaluationContext`` an optimizee sees for one work item."""
    from l2lflow.optimizees.base import EvaluationContext

    return EvaluationContext(
        generation=int(item["generation"]),
        individual=int(item["individual"]),
        seed=int(item["seed"]),
        attempt=int(item.get("attempt", 0)),
        threads=spec.threads,
        scratch_root=spec.scratch_root,
        experiment_seed=spec.experiment_seed,
        task_seed=int(item.get("task_seed", 0)),
        phase=str(item.get("phase", "optimize")),
        log=log,
    )


def run_one(spec: EvaluationSpec, item: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate one individual in this process and return a plain result dict (never raises)."""
    handler = _ListHandler()
    log = _EVALUATION_LOG
    log.addHandler(handler)
    start = time.perf_counter()
    try:
        optimizee = _optimizee(spec.optimizee)
        context = _context(spec, item, log)
        kwargs = dict(spec.options)
        if optimizee.accepts_context:
            kwargs["context"] = context
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = optimizee.function(dict(item["params"]), int(item["seed"]), **kwargs)
        for w in caught:
            handler.lines.append(f"WARNING {w.category.__name__}: {w.message}")
        return _record(spec, item, value, time.perf_counter() - start, "\n".join(handler.lines))
    except BaseException as exc:  # noqa: BLE001 - everything becomes a failed evaluation
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _failure(
            item,
            "exception",
            "".join(traceback.format_exception(exc)),
            time.perf_counter() - start,
            "\n".join(handler.lines),
        )
    finally:
        log.removeHandler(handler)


def run_batch(spec: EvaluationSpec, items: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Evaluate a chunk with one call of a batched optimizee; one result per item, in order.

    An exception fails the whole batch (the engine retries it in smaller pieces); a NaN fails
    only its own individual.
    """

    if not spec.batched:
        return [run_one(spec, item) for item in items]
    handler = _ListHandler()
    log = _EVALUATION_LOG
    log.addHandler(handler)
    start = time.perf_counter()
    try:
        optimizee = _optimizee(spec.optimizee)
        contexts = [_context(spec, item, log) for item in items]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = optimizee.function(
                [dict(item["params"]) for item in items],
                [int(item["seed"]) for item in items],
                contexts=contexts,
                **spec.options,
            )
        for w in caught:
            handler.lines.append(f"WARNING {w.category.__name__}: {w.message}")
        values = list(values)
        if len(values) != len(items):
            raise ValueError(
                f"the batched optimizee returned {len(values)} results for {len(items)} individuals"
            )
    except BaseException as exc:  # noqa: BLE001 - the whole batch failed
        if isinstance(exc, KeyboardInterrupt):
            raise
        text = "".join(traceback.format_exception(exc))
        runtime = (time.perf_counter() - start) / max(1, len(items))
        return [
            _failure(item, "exception", text, runtime, "\n".join(handler.lines)) for item in items
        ]
    finally:
        log.removeHandler(handler)
    runtime = (time.perf_counter() - start) / max(1, len(items))
    log_text = "\n".join(handler.lines)
    return [
        _record(spec, item, value, runtime, log_text)
        for item, value in zip(items, values, strict=True)
    ]


def _record(
    spec: EvaluationSpec, item: Mapping[str, Any], value: Any, runtime: float, log: str
) -> dict[str, Any]:
    """The record of one completed evaluation's return value: done with a finite fitness;
    failed as ``result`` when the value cannot be stored, as ``nonfinite`` (with the metrics
    and arrays it returned) for a NaN/inf fitness. Both are deterministic: never retried."""
    try:
        fitness, metrics, arrays = _normalise(
            value, spec.fitness_key, spec.objectives, frozenset(item["params"])
        )
    except ResultError as exc:
        return _failure(item, "result", f"ResultError: {exc}", runtime, log)
    if not math.isfinite(fitness):
        return _failure(item, "nonfinite", f"fitness is {fitness!r}", runtime, log, metrics, arrays)
    return _success(item, fitness, metrics, arrays, runtime, log)


# ---------------------------------------------------------------------------- the sandbox
#: environment variable that marks a sandbox and all its descendants (value: the sandbox's token)
SANDBOX_TOKEN_VAR = "L2LFLOW_SANDBOX"
_PARENT_VAR = "L2LFLOW_SANDBOX_PARENT"

#: the guard of one sandbox (stdlib only, run with ``python -I -S``): argv = sandbox pid, token
_GUARD = r"""
import ctypes, os, signal, sys, time
sandbox, token = int(sys.argv[1]), sys.argv[2].encode()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGHUP, signal.SIGINT})
ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: tell me when the sandbox dies
while os.getppid() == sandbox:
    signal.sigtimedwait({signal.SIGTERM, signal.SIGHUP, signal.SIGINT}, 1.0)
needle = b"L2LFLOW_SANDBOX=" + token
for _ in range(20):  # until a scan finds nobody (a process may fork while we kill)
    try:
        os.killpg(sandbox, signal.SIGKILL)
        found = True
    except OSError:
        found = False
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    os.kill(int(entry), signal.SIGKILL)
                    found = True
        except OSError:
            pass
    if not found:
        break
    time.sleep(0.05)
"""


def _prctl(option: int, value: int) -> bool:
    """``prctl(option, value)`` on Linux; False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(option, value) == 0
    except Exception:  # noqa: BLE001 - no libc prctl: the guard still sweeps
        return False


def _become_sandbox() -> bool:
    """Tie this process to its worker and start its guard; False if the worker is gone already."""
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the worker (no orphans mid-C-call)
    if str(os.getppid()) != os.environ.get(_PARENT_VAR, str(os.getppid())):
        return False  # the worker died before the line above
    _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphaned descendants stay in this process's tree
    token = os.environ.get(SANDBOX_TOKEN_VAR)
    if token:
        env = {k: v for k, v in os.environ.items() if k != SANDBOX_TOKEN_VAR}
        subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _GUARD, str(os.getpid()), token],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
            close_fds=True,
            start_new_session=True,  # a kill of the sandbox's group must not take it along
        )
    return True


def _reap_adopted() -> None:
    """Collect exited orphans this subreaper adopted (between evaluations: no zombies pile up)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _sandbox_main() -> None:
    """Entry point of the sandbox process: evaluate what arrives on stdin, answer on stdout."""
    if not _become_sandbox():
        return
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # an optimizee's prints go to the worker's log, not into the protocol
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
    receive, send = Connection(fd_in, writable=False), Connection(fd_out, readable=False)
    send.send(_SANDBOX_READY)  # started: the evaluations' clocks start after this
    while True:
        _reap_adopted()
        try:
            spec, items = receive.recv()
        except (EOFError, OSError):
            return
        if not items:  # warm-up (see warm_up): import what the first evaluation would import
            with contextlib.suppress(Exception):  # its evaluations report any failure properly
                _warm_optimizee(spec)
        elif spec.batched:
            for result in run_batch(spec, items):
                send.send(result)
        else:
            for item in items:
                send.send(run_one(spec, item))


class _Spawner:
    """One thread that starts every sandbox of this process and lives as long as the process.

    Why: Linux sends the parent-death signal when the *thread* that forked the child ends, and
    a sandbox started from a Dask executor thread would be killed when that thread ends, while
    its worker lives on (or, with another death signal, outlive the worker).
    """

    def __init__(self) -> None:
        self.requests: queue.Queue = queue.Queue()
        self.pid = os.getpid()
        threading.Thread(target=self._loop, name="l2lflow-sandbox-spawner", daemon=True).start()

    def _loop(self) -> None:
        while True:
            make, answer = self.requests.get()
            try:
                answer.put((True, make()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                answer.put((False, exc))

    def run(self, make: Callable[[], Any]) -> Any:
        answer: queue.Queue = queue.Queue(maxsize=1)
        self.requests.put((make, answer))
        ok, value = answer.get()
        if not ok:
            raise value
        return value


_SPAWNER: _Spawner | None = None
_SPAWNER_LOCK = threading.Lock()


def _spawner() -> _Spawner:
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None or _SPAWNER.pid != os.getpid():  # not inherited across a fork
            _SPAWNER = _Spawner()
        return _SPAWNER


#: the sandbox's first message: it has started (interpreter up, l2lflow imported)
_SANDBOX_READY = "l2lflow-sandbox-ready"
#: how long a sandbox may take to start; its start-up is not counted in any evaluation's timeout
SANDBOX_START_TIMEOUT_S = 120.0


class Sandbox:
    """A child process that evaluates one individual at a time (see module docstring)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env.setdefault("PYNEST_QUIET", "1")
        self.token = f"{os.getpid()}-{uuid.uuid4().hex}"
        env[SANDBOX_TOKEN_VAR] = self.token
        env[_PARENT_VAR] = str(os.getpid())
        self.process: subprocess.Popen = _spawner().run(
            lambda: subprocess.Popen(
                [sys.executable, "-c", "from l2lflow.runner import _sandbox_main; _sandbox_main()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                close_fds=True,
                start_new_session=True,  # its own process group, killed as one
            )
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._send = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self._receive = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self._started = False

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _await_start(self) -> bool:
        """Wait (bounded) until the sandbox says it has started; False (and killed) if it did not.

        A fresh sandbox starts an interpreter and imports l2lflow and numpy: on a busy machine
        that takes seconds, and counted in the first evaluation's ``timeout_s`` it failed
        healthy evaluations, and each failure's fresh sandbox the next one.
        """
        if not self._started:
            try:
                if self._receive.poll(SANDBOX_START_TIMEOUT_S):
                    self._started = self._receive.recv() == _SANDBOX_READY
            except (EOFError, OSError):
                self._started = False
            if not self._started:
                self.kill()
        return self._started

    def start_chunk(self, spec: EvaluationSpec, items: list[dict[str, Any]]) -> bool:
        """Send a whole chunk; the sandbox streams one result back per item, in order."""
        if not self._await_start():
            return False
        try:
            self._send.send((spec, items))
        except (BrokenPipeError, OSError):
            return False
        return True

    def next_result(self, spec: EvaluationSpec, item: Mapping[str, Any]) -> dict[str, Any]:
        """Wait for ``item``'s result, at most ``spec.timeout_s`` (None: no limit)."""
        start = time.perf_counter()
        try:
            answered = self._receive.poll(spec.timeout_s)
        except OSError:  # closed: the sandbox never started
            return self._crashed(item, start)
        if not answered:
            self.kill()
            return _failure(
                item,
                "timeout",
                f"TimeoutError: the evaluation ran longer than evaluation.timeout_s="
                f"{spec.timeout_s} s and was killed",
                time.perf_counter() - start,
            )
        try:
            return self._receive.recv()
        except (EOFError, OSError):
            return self._crashed(item, start)

    def _crashed(self, item: Mapping[str, Any], start: float) -> dict[str, Any]:
        code = self.process.wait()
        if code < 0:
            try:
                what = f"signal {-code} ({signal.Signals(-code).name})"
            except ValueError:
                what = f"signal {-code}"
        else:
            what = f"exit code {code}"
        return _failure(
            item,
            "crash",
            f"ProcessCrash: the evaluation's process died with {what}",
            time.perf_counter() - start,
        )

    def kill(self) -> None:
        """Kill the sandbox with its process group (its guard then kills the rest)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
        for conn in (self._send, self._receive):
            with contextlib.suppress(OSError):
                conn.close()


_SANDBOX: Sandbox | None = None
_SANDBOX_LOCK = threading.Lock()


def _sandbox() -> Sandbox:
    global _SANDBOX
    if _SANDBOX is None or not _SANDBOX.alive:
        _SANDBOX = Sandbox()
    return _SANDBOX


def _warm_optimizee(spec: EvaluationSpec) -> None:
    optimizee = _optimizee(spec.optimizee)
    if optimizee.warm_up is not None:
        optimizee.warm_up()


def warm_up(spec: EvaluationSpec) -> None:
    """Start this worker's sandbox and have it import the optimizee (a ``Client.run`` target).

    Why: a sandbox's start (an interpreter and l2lflow) and an optimizee's imports (NEST: 0.5 s)
    otherwise delay the first chunk of every worker. Sent while the run starts, it overlaps
    with Snakemake's first steps. ``Client.run`` calls this in the worker's event loop, so the
    work happens in a thread of its own; a chunk that arrives meanwhile waits for the sandbox
    it would have started itself, and one that holds it already makes the warm-up moot.
    """

    def start() -> None:
        if not _SANDBOX_LOCK.acquire(blocking=False):
            return
        try:
            _sandbox().start_chunk(spec, [])
        finally:
            _SANDBOX_LOCK.release()

    threading.Thread(target=start, name="l2lflow-sandbox-warm-up", daemon=True).start()


def worker_identity() -> str:
    """Where an evaluation ran: Dask worker name, Slurm job id and host."""
    parts = []
    try:
        from distributed import get_worker

        parts.append(f"worker={get_worker().name}")
    except Exception:  # noqa: BLE001 - not inside a Dask worker
        parts.append(f"pid={os.getpid()}")
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        parts.append(f"slurm_job={job}")
        if os.environ.get("SLURM_JOB_PARTITION"):
            parts.append(f"partition={os.environ['SLURM_JOB_PARTITION']}")
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        parts.append(f"gpu={os.environ['CUDA_VISIBLE_DEVICES']}")
    parts.append(f"host={socket.gethostname()}")
    return " ".join(parts)


def evaluate_chunk(spec: EvaluationSpec, items: list[dict[str, Any]] | Chunk) -> ChunkResults:
    """The Dask task: evaluate a few individuals one after the other (never raises for them).

    In a sandbox, the chunk is sent at once and results stream back; after a timeout or a
    crash, the sandbox is replaced and the rest of the chunk goes to the new one (for a batched
    optimizee, whose one call evaluates the whole chunk, the rest failed with it).
    """
    if isinstance(items, Chunk):
        items = items.items
    where = worker_identity()
    results: list[dict[str, Any]] = []
    if not spec.isolate:
        results = run_batch(spec, items)
    else:
        with _SANDBOX_LOCK:  # one chunk per sandbox at a time
            todo = list(items)
            while todo:
                sandbox = _sandbox()
                if not sandbox.start_chunk(spec, todo):
                    _sandbox_reset()
                    sandbox = _sandbox()
                    sandbox.start_chunk(spec, todo)
                for k, item in enumerate(todo):
                    if spec.batched and k == 0:
                        result = _first_of_batch(sandbox, spec, todo)
                    else:
                        result = sandbox.next_result(spec, item)
                    results.append(result)
                    if not result["ok"] and result["reason"] in ("timeout", "crash"):
                        _sandbox_reset()
                        if spec.batched:  # one call for all: every individual of it failed
                            results.extend(
                                {**result, "individual": other["individual"]}
                                for other in todo[k + 1 :]
                            )
                            todo = []
                            break
                        todo = todo[k + 1 :]
                        break
                else:
                    todo = []
    for result in results:
        result["worker"] = where
    return ChunkResults(results)


class ChunkResults(list):
    """A task's results (one dict per item, in order): a list that Dask moves as one pickle.

    Dask serialises a plain list's elements one by one, each with its own header; gathering a
    generation of 20,000 results that way cost the engine 13 times the CPU time of one pickle
    per task, and was the largest part of its time per result.
    """


def _first_of_batch(
    sandbox: Sandbox, spec: EvaluationSpec, items: list[dict[str, Any]]
) -> dict[str, Any]:
    """Wait for the first result of a batched call of ``len(items)`` individuals.

    ``evaluation.timeout_s`` bounds one evaluation, so a batch of n gets n × timeout_s (its
    results arrive together, when the call returns); the rest then arrive at once.
    """
    n = len(items)
    if spec.timeout_s is None or n == 1:
        return sandbox.next_result(spec, items[0])
    result = sandbox.next_result(replace(spec, timeout_s=spec.timeout_s * n), items[0])
    if not result["ok"] and result["reason"] == "timeout":
        result["error"] = (
            f"TimeoutError: the batched call of {n} individuals ran longer than {n} × "
            f"evaluation.timeout_s = {spec.timeout_s * n:g} s and was killed"
        )
    return result


@dataclass(frozen=True)
class Chunk:
    """The work items of one Dask task, as columns: built on the engine with a few numpy slices
    per task (no dict per individual, and Dask does not walk anything inside); the per-item
    dicts an optimizee's context is made from exist only on the worker (:attr:`items`)."""

    generations: np.ndarray
    individuals: np.ndarray
    seeds: np.ndarray
    attempts: np.ndarray
    #: parameter name -> this chunk's values (the store's dtype)
    params: dict[str, np.ndarray]
    task_seed: int = 0
    phase: str = "optimize"
    #: parameter name -> its ``ExpressionSpec``: such a parameter's values are genomes, which
    #: the optimizee gets compiled into a callable
    expressions: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.individuals)

    @property
    def items(self) -> list[dict[str, Any]]:
        """One work-item dict per individual (Python scalars, as ``ndarray.item()`` gives)."""
        columns = {name: values.tolist() for name, values in self.params.items()}
        for name, spec in self.expressions.items():
            columns[name] = [spec.compile(genome) for genome in columns[name]]
        return [
            {
                "generation": g,
                "individual": i,
                "seed": seed,
                "params": {name: column[k] for name, column in columns.items()},
                "attempt": attempt,
                "task_seed": self.task_seed,
                "phase": self.phase,
            }
            for k, (g, i, seed, attempt) in enumerate(
                zip(
                    self.generations.tolist(),
                    self.individuals.tolist(),
                    self.seeds.tolist(),
                    self.attempts.tolist(),
                    strict=True,
                )
            )
        ]


def work_chunk(
    generations: np.ndarray | int,
    individuals: np.ndarray,
    seeds: np.ndarray,
    params: dict[str, np.ndarray],
    attempts: np.ndarray | int = 0,
    *,
    task_seed: int = 0,
    phase: str = "optimize",
    expressions: dict[str, Any] | None = None,
) -> Chunk:
    """The one place work items are made: ``individuals`` with their ``seeds``, parameter
    values (name -> one value, or an expression's genome, per individual) and attempt numbers
    (a scalar: the same for all). ``ParameterSpace.work_chunk`` selects them from the store's
    columns."""
    individuals = np.asarray(individuals, dtype=np.int64)
    n = len(individuals)
    return Chunk(
        generations=np.broadcast_to(np.asarray(generations, dtype=np.int64), (n,)),
        individuals=individuals,
        seeds=np.asarray(seeds, dtype=np.int64).reshape(n),
        attempts=np.broadcast_to(np.asarray(attempts, dtype=np.int64), (n,)),
        params={name: np.asarray(column) for name, column in params.items()},
        task_seed=int(task_seed),
        phase=phase,
        expressions=dict(expressions or {}),
    )


def _sandbox_reset() -> None:
    global _SANDBOX
    if _SANDBOX is not None:
        _SANDBOX.kill()
    _SANDBOX = None


if __name__ == "__main__":  # pragma: no cover
    _sandbox_main()
