"""Evaluating one generation on Dask: chunked dispatch, retries, streaming writes.

The submit/collect/retry core is :class:`Dispatcher`; :func:`evaluate_generation` drives it for
a generation (results streamed into the store) and :func:`evaluate_meta_test` for the
meta-test of the best individuals (results returned in rank order). The client sends small
*chunks* of individuals to workers; each chunk is sized from the runtimes measured so far so
that it takes about ``TARGET_CHUNK_S``, or longer when many slots would otherwise finish more
than ``MAX_TASKS_PER_S`` tasks a second, and never shorter than ``MIN_TASK_S`` (many short
evaluations are batched to amortise Dask's per-task cost; long simulations go one per task).
Only a few chunks per worker are in flight, so an interruption repeats little work. Results are written to the store by this
process in batches at most ``FLUSH_INTERVAL_S`` apart. Failed attempts (exceptions, crashes,
timeouts, lost workers) are retried as configured, then recorded as failed with their reason and
the failure fitness; a completed evaluation with a NaN/inf fitness or a result that cannot be
stored is deterministic in its seed, so it is recorded as failed at once. A generation in which
every individual failed stops the run (:class:`GenerationFailed`) unless configured otherwise.
Nothing here waits without a timeout, so a lost worker or a hung evaluation cannot hang the run.
"""

from __future__ import annotations

import math
import queue as queue_module
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from l2lflow.execution.task import evaluate_chunk
from l2lflow.execution.work import (
    Chunk,
    EvaluationResult,
    EvaluationSpec,
    StoredResult,
    failure,
    unstorable,
    work_chunk,
)
from l2lflow.space import ParameterSpace
from l2lflow.store import DONE, FAILED, PENDING, ResultStore

TARGET_CHUNK_S = 0.1
#: tasks a second one engine hands out before chunks grow instead: each task costs the engine's
#: Dask client and scheduler ~1.6 ms of CPU (256 slots, one 0.25-s evaluation per task:
#: ``benchmarks/many_workers.py``), so 200 tasks/s keep a third of a core busy
MAX_TASKS_PER_S = 200.0
FLUSH_INTERVAL_S = 0.5
CHUNKS_PER_WORKER = 2
#: the least work a task holds once runtimes are known: a task's round trip (client, scheduler,
#: worker, sandbox and back) costs milliseconds, so cutting a generation of microsecond
#: evaluations into ever smaller tasks for balance cost more than it balanced. 1,000 Rastrigin
#: evaluations on 2 workers went as 22 tasks in 195-316 ms, with this floor as 5-8 tasks in
#: 138-190 ms; 32 of them as 10 tasks in 119-125 ms, now as one in 69-76 ms
MIN_TASK_S = 0.01


@dataclass
class Progress:
    """Counts of one generation's evaluation, sent to the progress display.

    ``running`` counts the evaluations that are really running (one per busy worker thread,
    a whole batch for a batched optimizee), not those queued on the workers; ``best`` and
    ``mean`` are over this generation's successful evaluations so far; ``reasons`` counts the
    final failures by reason (``timeout``, ``exception``, ``nan``, ``worker``, ...); ``workers``
    is the number of connected workers per pool (filled in by the experiment).
    """

    generation: int
    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    retried: int = 0
    started: float = 0.0
    best: float = math.nan
    mean: float = math.nan
    reasons: dict[str, int] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "running": self.running,
            "retried": self.retried,
            "elapsed": time.time() - self.started,
            "best": self.best,
            "mean": self.mean,
            "reasons": dict(self.reasons),
            "workers": dict(self.workers),
        }


class Interrupted(RuntimeError):
    """The evaluation was stopped on request (the caller went away); finished work is stored."""


class GenerationFailed(RuntimeError):
    """Every individual of a generation failed every attempt: the optimizee (or the setup) is
    broken, and going on would only feed the optimizer failure fitness. The failures stay in
    the store; the next run evaluates the generation again."""


#: failure reasons that a retry cannot change: the evaluation completed and returned a value
#: that is deterministic in its seed (a NaN/inf fitness, a result that cannot be stored)
DETERMINISTIC_FAILURES = ("nonfinite", "result")


def stops_when_all_fail(config: dict[str, Any]) -> bool:
    """Whether a generation whose every evaluation failed stops the run (``evaluation.
    on_all_failed``: ``stop``, the default; ``continue`` tells the optimizer and goes on)."""
    return config.get("evaluation", {}).get("on_all_failed", "stop") == "stop"


def individuals_to_evaluate(
    store: ResultStore, generation: int, config: dict[str, Any]
) -> list[int]:
    """The individuals of ``generation`` that an evaluate step runs: the pending ones, or all of
    them when every one failed in an earlier run that stopped on it (the user has fixed the
    model and runs again: the failures are replaced, not kept)."""
    status = store.status(generation)
    if (
        status.size
        and np.all(status == FAILED)
        and stops_when_all_fail(config)
        and store.n_aggregated() <= generation
    ):
        return list(range(status.size))
    return [int(i) for i in np.flatnonzero(status == PENDING)]


def check_result_shapes(result: EvaluationResult, shapes: dict[str, tuple[int, ...]]) -> str:
    """Why ``result``'s metrics and arrays do not fit the shapes fixed by earlier evaluations
    (name -> shape, () for a scalar metric), or "" when they fit. Adds its new names to
    ``shapes``, so the first evaluation checked that returns a name fixes its shape
    (:func:`evaluate_generation` checks a new name's results in individual order)."""
    if not result.get("metrics") and not result.get("arrays"):
        return ""  # a bare fitness (the common case: a constant cost per result)
    returned = {name: () for name in result.get("metrics", {})}
    returned.update({name: tuple(np.shape(a)) for name, a in result.get("arrays", {}).items()})
    for name, shape in returned.items():
        expected = shapes.get(name)
        if expected is not None and tuple(expected) != shape:
            what = lambda s: "a scalar" if s == () else f"an array of shape {s}"  # noqa: E731
            return (
                f"ResultError: result {name!r} is {what(shape)}, but the first evaluation that "
                f"returned it gave {what(tuple(expected))}: an optimizee must return each "
                "result with a fixed shape (the same in every evaluation)"
            )
    for name, shape in returned.items():
        shapes.setdefault(name, shape)
    return ""


def fitting_shapes(
    result: EvaluationResult, shapes: dict[str, tuple[int, ...]]
) -> EvaluationResult:
    """``result`` as it is, or, when a shape differs from ``shapes`` (see
    :func:`check_result_shapes`), a failed ``result`` record that stores nothing of it."""
    mismatch = check_result_shapes(result, shapes)
    return unstorable(result, mismatch) if mismatch else result


def failure_fitness(config: dict[str, Any]) -> float:
    """What a failed individual's fitness is: the configured value, else the worst possible."""
    value = (config.get("evaluation") or {}).get("failure_fitness")
    if value is not None:
        return float(value)
    return math.inf if config.get("direction", "minimize") == "minimize" else -math.inf


class Dispatcher:
    """The submit/collect/retry core shared by a generation and the meta-test.

    Work is a queue of ``(key, attempt)`` pairs (``key``: the caller's name for one evaluation,
    e.g. the individual's row); ``work`` turns a list of them into the :class:`Chunk` of one Dask
    task. Chunks are sized from the runtimes the caller reports (:attr:`runtimes`; none: one
    evaluation per task), and a fixed pool keeps only a few chunks per worker in flight. The
    caller decides what a finished attempt means and calls :meth:`retry` for another.
    """

    def __init__(
        self,
        client: Any,
        spec: EvaluationSpec,
        work: Callable[[list[tuple[int, int]]], Chunk],
        *,
        retries: int,
        batch_size: int,
        runtimes: list[float] | None = None,
        resources: dict[str, float] | None = None,
        slots: int = 0,
    ) -> None:
        self.client = client
        self.spec = spec
        self.work = work
        self.retries = retries
        self.batch_size = batch_size
        self.runtimes: list[float] = [] if runtimes is None else runtimes
        self.resources = resources
        self.slots = slots
        self.queue: deque[tuple[int, int]] = deque()
        self.in_flight: dict[Any, list[tuple[int, int]]] = {}
        self.finished: queue_module.Queue = queue_module.Queue()
        self.workers = max(1, _worker_count(client), slots)

    def add(self, keys: list[int]) -> None:
        """Queue a first attempt of each of ``keys``, in this order."""
        self.queue.extend((key, 0) for key in keys)

    def retry(self, key: int, attempt: int) -> None:
        """Queue attempt ``attempt`` of ``key`` (after the others already waiting)."""
        self.queue.append((key, attempt))

    @property
    def busy(self) -> bool:
        return bool(self.in_flight)

    @property
    def running(self) -> int:
        """Evaluations running now (see :func:`_really_running`)."""
        return _really_running(self.in_flight, self.workers, self.spec.batched)

    def submit_more(self) -> None:
        """Submit chunks of the queue until enough are in flight."""
        if not self.in_flight:
            self.workers = max(1, _worker_count(self.client), self.slots)
        chunks = []
        # an adaptive pool (slots > 0) grows only for work it sees queued (Dask asks for a worker
        # per ~5 s of queued runtime), so it gets the whole generation at once; a fixed pool gets
        # a few chunks per worker, so that an interruption repeats little
        limit = math.inf if self.slots else self.workers * CHUNKS_PER_WORKER
        while self.queue and len(self.in_flight) + len(chunks) < limit:
            if self.spec.batched:
                chunks.append(_next_batch(self.queue, self.batch_size, self.retries))
            else:
                size = _chunk_size(self.runtimes, len(self.queue), self.workers)
                chunks.append([self.queue.popleft() for _ in range(min(size, len(self.queue)))])
        if chunks:
            # one call for all new tasks: each submit (and each result) is a round trip to the
            # client's event loop, which serialised dispatch once hundreds of slots were waiting
            futures = self.client.map(
                evaluate_chunk,
                [self.spec] * len(chunks),
                [self.work(chunk) for chunk in chunks],
                pure=False,
                resources=self.resources,
                retries=0,
            )
            for fut, chunk in zip(futures, chunks, strict=True):
                self.in_flight[fut] = chunk
                fut.add_done_callback(self.finished.put)

    def collect(self, timeout: float = 0.2) -> list[tuple[int, int, EvaluationResult]]:
        """``(key, attempt, result)`` of the attempts finished so far, waiting up to ``timeout``
        for the first; a lost task (a killed worker, ...) fails each of its attempts with
        reason ``worker``."""
        out = []
        done = _finished_some(self.finished, timeout=timeout)
        for fut, results in zip(done, _results_of(self.client, done), strict=True):
            chunk = self.in_flight.pop(fut)
            if isinstance(results, BaseException):  # a lost worker (KilledWorker), ...
                error = f"{type(results).__name__}: {results}"
                results = [
                    failure({"individual": key}, "worker", error, math.nan) for key, _ in chunk
                ]
            for (key, attempt), result in zip(chunk, results, strict=True):
                out.append((key, attempt, result))
        return out

    def cancel(self) -> None:
        """Cancel what is still in flight (an interruption, an error)."""
        if self.in_flight:
            self.client.cancel(list(self.in_flight))
            self.in_flight.clear()

    def retries_left(self, attempt: int, result: EvaluationResult) -> bool:
        """Whether a failed ``result`` of ``attempt`` is tried again: a retry is left, and the
        failure is not deterministic in its seed."""
        return attempt < self.retries and result.get("reason") not in DETERMINISTIC_FAILURES


def evaluate_generation(
    client: Any,
    store: ResultStore,
    generation: int,
    spec: EvaluationSpec,
    config: dict[str, Any],
    *,
    task_seed: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resources: dict[str, float] | None = None,
    slots: int = 0,
) -> Progress:
    """Evaluate every individual of ``generation`` whose status is not final yet.

    ``slots``: the most evaluation slots an adaptive pool can grow to (0: a fixed pool); chunks
    are sized for that many, and the whole generation is submitted so that the pool sees the
    demand and scales up.
    """
    status = store.status(generation)
    todo = individuals_to_evaluate(store, generation, config)
    progress = Progress(generation, total=len(status), started=time.time())
    progress.done = int(np.sum(status == DONE))
    progress.failed = int(np.sum(status == FAILED)) - int(np.sum(status[todo] == FAILED))
    if not todo:
        return progress
    maximize = config.get("direction", "minimize") == "maximize"
    stored = np.asarray(store.fitness(generation), dtype=np.float64)
    good = stored[(status == DONE) & np.isfinite(stored)]
    # count, sum and best so far: a constant cost per result (a mean over a growing list was
    # quadratic in the population)
    tally = [good.size, float(np.sum(good))]
    if good.size:
        progress.best = float(good.max() if maximize else good.min())

    def note_fitness(value: float | None = None) -> None:
        if value is not None and math.isfinite(value):
            tally[0] += 1
            tally[1] += value
            if math.isnan(progress.best) or (
                value > progress.best if maximize else value < progress.best
            ):
                progress.best = value
        if tally[0]:
            progress.mean = tally[1] / tally[0]

    note_fitness()
    params = store.parameters(generation)
    seeds = store.seeds(generation)
    space = ParameterSpace.from_config(config["space"])
    fail_value = failure_fitness(config)

    def work(chunk: list[tuple[int, int]]) -> Chunk:
        rows = np.fromiter((i for i, _ in chunk), dtype=np.int64, count=len(chunk))
        attempts = np.fromiter((a for _, a in chunk), dtype=np.int64, count=len(chunk))
        return space.work_chunk(
            generation, rows, seeds[rows], params, attempts, task_seed=task_seed
        )

    dispatcher = Dispatcher(
        client,
        spec,
        work,
        retries=int(config.get("evaluation", {}).get("retries", 1)),
        batch_size=int(config.get("evaluation", {}).get("batch_size") or len(status)),
        runtimes=_previous_runtimes(store, generation),
        resources=resources,
        slots=slots,
    )
    dispatcher.add(todo)
    buffer: list[StoredResult] = []
    last_flush = time.monotonic()

    shapes = store.result_shapes()
    # A result that returns a name whose shape is not fixed yet waits until every individual
    # before it is final: so the lowest individual that returns a name fixes its shape, not the
    # first to arrive, and which individual a mismatch fails is the same in every run.
    final = np.asarray(status != PENDING)
    final[todo] = False
    lowest_open = int(np.argmin(final)) if not final.all() else final.size  # first not final
    held: dict[int, tuple[int, EvaluationResult]] = {}

    def record(i: int, attempt: int, result: EvaluationResult) -> None:
        nonlocal lowest_open
        names = [*result.get("metrics", {}), *result.get("arrays", {})]
        if i > lowest_open and any(name not in shapes for name in names):
            held[i] = (attempt, result)
            return
        finish(i, attempt, result)
        while lowest_open < final.size and final[lowest_open]:
            lowest_open += 1
            if lowest_open in held:
                finish(lowest_open, *held.pop(lowest_open))

    def finish(i: int, attempt: int, result: EvaluationResult) -> None:
        result = fitting_shapes(result, shapes)
        if result["ok"]:
            final[i] = True
            dispatcher.runtimes.append(float(result["runtime"]))
            buffer.append(
                {
                    **result,
                    "individual": i,
                    "status": DONE,
                    "attempts": attempt + 1,
                    "finished_at": time.time(),
                }
            )
            progress.done += 1
            note_fitness(float(result.get("fitness", math.nan)))
        elif dispatcher.retries_left(attempt, result):
            dispatcher.retry(i, attempt + 1)
            progress.retried += 1
        else:
            final[i] = True
            buffer.append(
                {
                    **result,
                    "individual": i,
                    "status": FAILED,
                    "fitness": fail_value,
                    # what a completed evaluation returned beside a NaN fitness is kept
                    "metrics": result.get("metrics", {}),
                    "arrays": result.get("arrays", {}),
                    "attempts": attempt + 1,
                    "finished_at": time.time(),
                    "error": f"[{result.get('reason', 'error')}] {result.get('error', '')}",
                }
            )
            progress.failed += 1
            reason = str(result.get("reason", "error"))
            progress.reasons[reason] = progress.reasons.get(reason, 0) + 1

    def after_collect() -> None:
        if not dispatcher.busy and not dispatcher.queue:
            for i in sorted(held):  # not expected: every individual before them is final
                finish(i, *held.pop(i))

    def after_submit() -> None:
        nonlocal last_flush
        progress.running = dispatcher.running
        if buffer and time.monotonic() - last_flush >= FLUSH_INTERVAL_S:
            store.write_results(generation, buffer)
            buffer.clear()
            last_flush = time.monotonic()
        if on_progress is not None:
            on_progress(progress)

    try:
        _run(
            dispatcher,
            record,
            what=f"generation {generation}",
            should_stop=should_stop,
            after_collect=after_collect,
            after_submit=after_submit,
            on_start=lambda: setattr(progress, "running", dispatcher.running),
        )
    finally:
        if buffer:
            store.write_results(generation, buffer)
            buffer.clear()
    progress.running = 0
    if on_progress is not None:
        on_progress(progress)
    _stop_if_all_failed(store, generation, config)
    return progress


def _run(
    dispatcher: Dispatcher,
    on_result: Callable[[int, int, EvaluationResult], None],
    *,
    what: str,
    should_stop: Callable[[], bool] | None = None,
    after_collect: Callable[[], None] | None = None,
    after_submit: Callable[[], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> None:
    """Submit, collect and hand each finished attempt to ``on_result`` until nothing is in flight
    or queued; what is in flight is cancelled on the way out (an interruption, an error).

    Every wait is bounded (``collect`` waits at most 0.2 s), so ``should_stop`` is asked often
    and a lost worker or a hung evaluation cannot hang the caller.
    """
    try:
        dispatcher.submit_more()
        if on_start is not None:
            on_start()
        while dispatcher.busy:
            if should_stop is not None and should_stop():
                raise Interrupted(f"{what}: interrupted")
            for key, attempt, result in dispatcher.collect(timeout=0.2):
                on_result(key, attempt, result)
            if after_collect is not None:
                after_collect()
            dispatcher.submit_more()
            if after_submit is not None:
                after_submit()
    finally:
        dispatcher.cancel()


def evaluate_meta_test(
    client: Any,
    store: ResultStore,
    chosen: list[tuple[int, int]],
    spec: EvaluationSpec,
    config: dict[str, Any],
    *,
    task_seed: int,
    seeds: list[int],
    resources: dict[str, float] | None = None,
    slots: int = 0,
) -> list[EvaluationResult]:
    """Evaluate the ``chosen`` (generation, individual) pairs once more with ``seeds`` (one each)
    and ``task_seed``, in phase ``meta_test``, through the same dispatch as a generation.

    Returns one result record per pair, in the order of ``chosen``: the last attempt's, with
    ``generation`` and ``individual`` set. Failed attempts are retried as in a generation;
    results whose shapes do not fit the run's are failed as ``result``, checked in the order of
    ``chosen`` (so the same pair fails whatever order they finished in). Each task holds one
    evaluation and one call of a batched optimizee evaluates one individual, as a meta-test was
    always run: its results stay bit-identical to those of earlier versions.
    """
    if not chosen:
        return []
    space = ParameterSpace.from_config(config["space"])
    params = {g: store.parameters(g) for g in sorted({g for g, _ in chosen})}
    expressions = {p.name: p.expression for p in space.parameters if p.expression}

    def work(chunk: list[tuple[int, int]]) -> Chunk:
        picks = [chosen[k] for k, _ in chunk]
        return work_chunk(
            np.array([g for g, _ in picks], dtype=np.int64),
            np.array([i for _, i in picks], dtype=np.int64),
            np.array([seeds[k] for k, _ in chunk], dtype=np.int64),
            {
                p.name: np.stack([np.asarray(params[g][p.name])[i] for g, i in picks])
                for p in space.parameters
            },
            np.array([a for _, a in chunk], dtype=np.int64),
            task_seed=task_seed,
            phase="meta_test",
            expressions=expressions,
        )

    dispatcher = Dispatcher(
        client,
        spec,
        work,
        retries=int(config.get("evaluation", {}).get("retries", 1)),
        batch_size=1,
        resources=resources,
        slots=slots,
    )
    dispatcher.add(list(range(len(chosen))))
    results: dict[int, EvaluationResult] = {}

    def record(k: int, attempt: int, result: EvaluationResult) -> None:
        if not result["ok"] and dispatcher.retries_left(attempt, result):
            dispatcher.retry(k, attempt + 1)
        else:
            results[k] = result

    _run(dispatcher, record, what="meta-test")
    shapes = store.result_shapes()  # meta-test results must fit the run's shapes
    return [
        {**fitting_shapes(results[k], shapes), "generation": g, "individual": i}
        for k, (g, i) in enumerate(chosen)
    ]


def _stop_if_all_failed(store: ResultStore, generation: int, config: dict[str, Any]) -> None:
    """Raise :class:`GenerationFailed` with the first failure's error when every individual of
    ``generation`` failed and ``evaluation.on_all_failed`` is ``stop``."""
    status = store.status(generation)
    if not (status.size and np.all(status == FAILED) and stops_when_all_fail(config)):
        return
    errors = np.asarray(store.array("error")[generation, :])
    first = str(errors[0]).strip() or "(no error recorded)"
    raise GenerationFailed(
        f"generation {generation}: all {status.size} evaluations failed, so the run stops "
        f"(evaluation.on_all_failed: stop). The first failure, individual 0:\n{first}\n"
        "The failures are in the store (`l2lflow status`, ds.l2l.failures()); fix the "
        "optimizee and run again: the generation is evaluated again."
    )


def _really_running(in_flight: dict[Any, list], workers: int, batched: bool) -> int:
    """Evaluations running now: a worker thread runs one chunk at a time, one individual after
    another (a batched optimizee: the whole batch at once); the other chunks wait in its queue."""
    busy = list(in_flight.values())[:workers]
    return sum(len(c) for c in busy) if batched else len(busy)


def _finished_some(finished: queue_module.Queue, timeout: float) -> list[Any]:
    """Futures finished so far, waiting up to ``timeout`` for the first (never forever)."""
    try:
        out = [finished.get(timeout=timeout)]
    except queue_module.Empty:
        return []
    while True:
        try:
            out.append(finished.get_nowait())
        except queue_module.Empty:
            return out


def _results_of(client: Any, futures: list[Any]) -> list[Any]:
    """The results of finished futures, fetched in one round trip; an exception for a failed one.

    ``client.gather`` of the whole batch is the fast path; only when some future failed (a lost
    worker, a cancelled task) is each one asked on its own, to tell which.
    """
    if not futures:
        return []
    try:
        return list(client.gather(futures))
    except Exception:  # noqa: BLE001 - sorted out one by one below
        out: list[Any] = []
        for fut in futures:
            try:
                out.append(fut.result())
            except Exception as exc:  # noqa: BLE001 - becomes a failed attempt of its chunk
                out.append(exc)
        return out


def _worker_count(client: Any) -> int:
    """Evaluation slots: the threads of all connected workers (one per worker process here,
    but a pool of multi-threaded workers must get as many tasks in flight as it has threads)."""
    try:
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
    except TypeError:  # older distributed
        workers = client.scheduler_info().get("workers", {})
    return sum(int(w.get("nthreads", 1) or 1) for w in workers.values())


def _previous_runtimes(store: ResultStore, generation: int) -> list[float]:
    """Runtimes measured so far (this generation, else the one before) to size chunks."""
    for g in (generation, generation - 1):
        if g < 0:
            continue
        rt = np.asarray(store.array("runtime")[g, :], dtype=np.float64)
        rt = rt[np.isfinite(rt)]
        if rt.size:
            return rt.tolist()[-256:]
    return []


def _next_batch(queue: deque, batch_size: int, retries: int) -> list[tuple[int, int]]:
    """The next batch for a batched optimizee: individuals of one attempt level.

    A failed batch is retried in halves (attempt 1: half the batch size, ...) and, at its last
    attempt, one individual at a time, so that one bad individual cannot fail the others.
    """
    attempt = queue[0][1]
    size = 1 if attempt >= retries and attempt > 0 else max(1, batch_size >> attempt)
    chunk = []
    while queue and len(chunk) < size and queue[0][1] == attempt:
        chunk.append(queue.popleft())
    return chunk


def _chunk_size(runtimes: list[float], remaining: int, workers: int) -> int:
    """Individuals per task: about TARGET_CHUNK_S of work, but enough tasks for every worker.

    Until a runtime is known (the first chunks of a run) every task holds one individual: a
    guess of 4 cut 16 long simulations into 4 tasks of unequal length for 2 workers, and the
    generation waited for the slowest pair. The first result sizes the chunks that follow, so
    cheap evaluations pay the one-per-task cost only for the first ``workers × 2`` of them.
    Evaluations longer than the target always go one per task. The target is TARGET_CHUNK_S,
    or ``workers / MAX_TASKS_PER_S`` where that is longer: 256 slots finishing 0.25-s
    evaluations one per task asked ~1,000 tasks a second of the engine, which could hand out
    ~600, and the slots waited for it. Within those bounds chunks shrink as the queue does, so
    that the last ones are short; but no task holds less than ``MIN_TASK_S`` of work (see
    there), whatever the balance: the idle time that costs is at most that long.
    """
    if not runtimes:
        return 1
    fair = max(1, math.ceil(remaining / (workers * CHUNKS_PER_WORKER)))
    mean = max(float(np.mean(runtimes[-64:])), 1e-6)
    by_target = int(TARGET_CHUNK_S / mean)
    by_engine = math.ceil(workers / (MAX_TASKS_PER_S * mean))  # tasks/s <= MAX_TASKS_PER_S
    least = min(remaining, math.ceil(MIN_TASK_S / mean))
    return max(1, least, min(fair, max(by_target, by_engine)))
