"""``l2lflow status``: what a run has done so far, readable while the engine writes the store.

Timing comes from the store alone: every evaluation has ``finished_at`` (wall clock) and
``runtime``, so its start is ``finished_at - runtime``. A generation's duration is the time from
the end of the previous generation (for the first: its first evaluation's start) to its last
evaluation's end, so the pipeline's own overhead (sample, aggregate) is included. The elapsed
time runs from the first evaluation's start to the last evaluation's end (to now while the run
is going), so it is the sum of the generations' durations. Pauses (the run stopped and was
resumed later) are left out of both: a stretch longer than ``max(60 s, 3 × the longest
evaluation)`` without any evaluation starting or ending counts as a pause. The ETA is the mean
duration of the finished generations × the generations still to run, where a generation in
progress counts by its fraction of pending individuals.

Whether a run is going is not guessed from the time since the last result: the process that
holds the results folder's lock (the engine, or ``l2lflow run``) wrote its pid and host into the
lock file, and a run is "running" exactly while that process lives, so a run stopped by Ctrl-C or
a kill reads "not running" at once (a run on another host falls back to the time since the
last result). Multi-objective runs report their Pareto front (size and hypervolume) instead of a
"best" of a scalar that means nothing there.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from l2lflow.display import duration
from l2lflow.store import DONE, FAILED, PENDING, ResultStore, StoreError, store_path

#: a gap without any evaluation event longer than this (at least) is a pause, not run time
MIN_PAUSE_S = 60.0


@dataclass
class GenerationStatus:
    generation: int
    done: int
    failed: int
    pending: int
    best: float
    mean: float
    #: seconds the generation took (so far, while it runs); NaN before its first result
    duration_s: float
    #: the optimizer has been told the results (checkpoint written)
    aggregated: bool
    last_finished: float
    #: multi-objective runs: individuals on the generation's Pareto front and its hypervolume
    front_size: int | None = None
    hypervolume: float = math.nan


@dataclass
class RunStatus:
    name: str
    direction: str
    fitness_name: str
    generations: int
    population_size: int
    rows: list[GenerationStatus]
    elapsed_s: float
    #: mean duration of the finished generations (NaN before the first one finishes)
    generation_s: float
    eta_s: float
    finished: bool
    #: seconds since the last evaluation finished (NaN before the first)
    idle_s: float
    best: dict[str, Any] | None = None
    meta_test: list[dict[str, Any]] = field(default_factory=list)
    #: whether the process that holds the results (engine or `l2lflow run`) lives; None when
    #: it runs on another host (then the time since the last result decides)
    engine_alive: bool | None = None
    #: multi-objective runs: the last generation's front (size, hypervolume, reference, objectives)
    front: dict[str, Any] | None = None

    @property
    def state(self) -> str:
        """``finished``, ``running`` or ``not running``."""
        if self.finished:
            return "finished"
        if self.engine_alive is not None:
            return "running" if self.engine_alive else "not running"
        return "running" if self.idle_s <= MIN_PAUSE_S else "not running"

    @property
    def n_aggregated(self) -> int:
        return sum(r.aggregated for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        return _jsonable({**asdict(self), "state": self.state})


def _results_dir(path: str | Path) -> Path:
    path = Path(path)
    return path.parent if path.name == store_path(".").name else path


def _read(store: ResultStore, name: str) -> np.ndarray | None:
    if not store.has(name):
        return None
    return np.asarray(store.array(name)[...])


def _active_time(events: np.ndarray, lo: float, hi: float, pause: float) -> float:
    """Seconds in [lo, hi] during which the run was active (gaps > ``pause`` left out)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return 0.0
    inside = events[(events > lo) & (events < hi)]
    t = np.concatenate([[lo], inside, [hi]])
    gaps = np.diff(t)
    return float(gaps[gaps <= pause].sum())


def run_status(results: str | Path, *, now: float | None = None) -> RunStatus:
    """The status of a run, from its store (safe while the engine writes it)."""
    now = time.time() if now is None else now
    store = ResultStore(_results_dir(results))
    config = store.config
    direction = store.attrs.get("direction", config.get("direction", "minimize"))
    pop = store.population_size
    status = _read(store, "status")
    fitness = _read(store, "fitness")
    finished = _read(store, "finished_at")
    runtime = _read(store, "runtime")
    if status is None or fitness is None or not store.has("generation"):
        # the engine is creating the store (its metadata is written before its arrays)
        status = np.zeros((0, pop), dtype=np.int8)
        fitness = np.zeros((0, pop))
    # the engine grows one array after another: use the rows every array already has
    n = min(a.shape[0] for a in (status, fitness, finished, runtime) if a is not None)
    n = min(n, store.n_generations) if n else 0
    status = status[:n]
    fitness = np.asarray(fitness[:n], dtype=np.float64)
    finished = np.asarray(finished[:n], dtype=np.float64) if finished is not None else None
    if finished is None:
        finished = np.full(status.shape, np.nan)
    runtime = (
        np.asarray(runtime[:n], dtype=np.float64)
        if runtime is not None
        else np.full(status.shape, np.nan)
    )
    # not yet written (status pending) cells may hold stale fill values: ignore them
    finished = np.where(status != PENDING, finished, np.nan)
    started = np.where(np.isfinite(runtime), finished - np.maximum(runtime, 0.0), finished)
    has_time = np.isfinite(finished)
    events = np.sort(np.concatenate([finished[has_time], started[has_time]]))
    max_runtime = (
        float(np.nanmax(runtime[has_time])) if np.isfinite(runtime[has_time]).any() else 0.0
    )
    pause = max(MIN_PAUSE_S, 3.0 * max_runtime)
    aggregated = store.n_aggregated()
    target = int(config["generations"])
    finished_all = n >= target and not np.any(status == PENDING) and aggregated >= target
    last_event = float(events[-1]) if events.size else math.nan
    idle_s = now - last_event if events.size else math.nan
    # "now" counts as run time only while results keep coming and the run is not finished
    horizon = now if events.size and idle_s <= pause and not finished_all else last_event

    rows: list[GenerationStatus] = []
    durations: list[float] = []
    prev_end = float(events[0]) if events.size else math.nan
    for g in range(n):
        s, f = status[g], fitness[g]
        ok = f[(s == DONE) & np.isfinite(f)]
        best = (ok.min() if direction == "minimize" else ok.max()) if ok.size else math.nan
        t = finished[g][np.isfinite(finished[g])]
        pending = int(np.sum(s == PENDING))
        complete = pending == 0 and t.size > 0
        if g == 0 and t.size:
            prev_end = float(np.nanmin(started[0]))
        if complete:
            end = float(t.max())
            duration = _active_time(events, prev_end, end, pause)
            durations.append(duration)
            prev_end = end
        elif t.size or g == n - 1:
            duration = _active_time(events, prev_end, horizon, pause) if events.size else math.nan
        else:
            duration = math.nan
        rows.append(
            GenerationStatus(
                generation=g,
                done=int(np.sum(s == DONE)),
                failed=int(np.sum(s == FAILED)),
                pending=pending,
                best=float(best),
                mean=float(ok.mean()) if ok.size else math.nan,
                duration_s=float(duration),
                aggregated=g < aggregated,
                last_finished=float(t.max()) if t.size else math.nan,
            )
        )

    elapsed = _active_time(events, float(events[0]), horizon, pause) if events.size else 0.0
    pending_frac = sum(r.pending for r in rows) / pop
    remaining = max(target - n, 0) + pending_frac
    if durations:
        per_gen = float(np.mean(durations))
    else:  # the first generation runs: extrapolate from its finished fraction
        frac = (int(np.sum(status != PENDING)) / pop) if n else 0.0
        per_gen = elapsed / frac if frac > 0 else math.nan
    eta = 0.0 if finished_all else per_gen * remaining

    best_info = None
    good = np.where((status == DONE) & np.isfinite(fitness), fitness, np.nan)
    if np.isfinite(good).any():
        flat = np.nanargmin(good) if direction == "minimize" else np.nanargmax(good)
        g, i = (int(k) for k in np.unravel_index(flat, good.shape))
        params = {}
        for name in store.parameter_names:
            if store.has(f"{name}_formula"):  # an expression: its formula, not its genome
                name = f"{name}_formula"
            value = store.array(name)[g, i]
            params[name] = value.item() if hasattr(value, "item") else value
        best_info = {
            "generation": g,
            "individual": i,
            "fitness": float(good[g, i]),
            "params": params,
        }

    fronts = pareto_fronts(store, config, n)
    front = None
    if fronts is not None:
        for row, size, hv in zip(rows, fronts["sizes"], fronts["hypervolume"], strict=True):
            row.front_size, row.hypervolume = int(size), float(hv)
        last = max((r.generation for r in rows if r.aggregated), default=None)
        if last is not None:
            front = {
                "generation": last,
                "size": int(fronts["sizes"][last]),
                "hypervolume": float(fronts["hypervolume"][last]),
                "reference": [float(v) for v in fronts["reference"]],
                "objectives": fronts["objectives"],
            }

    return RunStatus(
        name=str(store.attrs.get("name", config.get("name", "?"))),
        direction=direction,
        fitness_name=str(config.get("optimizee", {}).get("fitness", "fitness")),
        generations=target,
        population_size=pop,
        rows=rows,
        elapsed_s=float(elapsed),
        generation_s=float(per_gen),
        eta_s=float(eta),
        finished=bool(finished_all),
        idle_s=float(idle_s),
        best=None if front is not None else best_info,
        meta_test=_meta_test(store),
        engine_alive=engine_alive(_results_dir(results)),
        front=front,
    )


def engine_alive(results_dir: str | Path) -> bool | None:
    """Whether the process holding ``results_dir``'s lock (engine or ``l2lflow run``) lives.

    The holder takes an exclusive ``flock`` on the lock file, which the kernel drops when it
    dies, and writes ``PID HOST`` into it (the text stays after its death). On this host the
    kernel's lock table (``/proc/locks``) says whether anyone holds the lock, so a reused pid
    cannot fool it; without ``/proc`` the pid is asked. False: never locked, or the holder is
    gone; None: the holder runs on another host, which this cannot see.
    """
    from l2lflow.client import LOCK_NAME

    path = Path(results_dir) / LOCK_NAME
    try:
        pid_text, host = path.read_text().split()[:2]
        pid = int(pid_text)
        st = path.stat()
    except (OSError, ValueError):
        return False
    if host != socket.gethostname():
        return None
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        table = None
    if table is not None:
        key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        return any(
            "FLOCK" in line and "->" not in line and key in line.split()
            for line in table.splitlines()
        )
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def pareto_fronts(store: ResultStore, config: dict[str, Any], n: int) -> dict[str, Any] | None:
    """Per generation: the Pareto front's size and hypervolume, or None for a single-objective
    run (see :func:`front_statistics`)."""
    objectives = (config.get("optimizee") or {}).get("objectives") or []
    if len(objectives) < 2 or not store.has("objectives") or not store.has("pareto_rank"):
        return None
    values = np.asarray(store.array("objectives")[:n], dtype=np.float64)
    ranks = np.asarray(store.array("pareto_rank")[:n])
    return front_statistics(values, ranks, config)


def front_statistics(values: np.ndarray, ranks: np.ndarray, config: dict[str, Any]) -> dict:
    """Pareto front size and hypervolume per generation of ``values`` (generation, individual,
    objective) with their ``ranks`` (0 = front, -1 = failed).

    The hypervolume (2 objectives; NaN for more) is measured in loss space (every objective
    minimised) up to one fixed reference point for the whole run: the worst value of each
    objective over all successful evaluations plus 10 % of its range, so that generations
    compare. The reference is returned in the objectives' own signs.
    """
    from l2lflow.optimizers.nsga2 import hypervolume_2d

    objectives = config["optimizee"]["objectives"]
    signs = np.array(
        [
            1.0 if o.get("direction", config.get("direction", "minimize")) == "minimize" else -1.0
            for o in objectives
        ]
    )
    loss = values * signs
    ok = np.all(np.isfinite(loss), axis=-1) & (ranks >= 0)
    sizes = np.sum(ranks == 0, axis=1)
    hv = np.full(len(loss), math.nan)
    reference = np.full(len(objectives), math.nan)
    if ok.any() and len(objectives) == 2:
        good = loss[ok]
        lo, hi = good.min(axis=0), good.max(axis=0)
        reference = hi + 0.1 * np.where(hi > lo, hi - lo, 1.0)
        for g in range(len(loss)):
            front = loss[g][(ranks[g] == 0) & ok[g]]
            if front.size:
                hv[g] = hypervolume_2d(front, (float(reference[0]), float(reference[1])))
    return {
        "sizes": sizes,
        "hypervolume": hv,
        "reference": reference * signs,
        "objectives": [o["name"] for o in objectives],
    }


def _meta_test(store: ResultStore) -> list[dict[str, Any]]:
    if not store.has("meta_test_fitness"):
        return []
    cols = {}
    for name in ("generation", "individual", "fitness", "status"):
        values = _read(store, f"meta_test_{name}")
        if values is None:
            return []
        cols[name] = values
    return [
        {
            "rank": k,
            "generation": int(cols["generation"][k]),
            "individual": int(cols["individual"][k]),
            "fitness": float(cols["fitness"][k]),
            "status": int(cols["status"][k]),
        }
        for k in range(len(cols["fitness"]))
        if int(cols["status"][k]) != PENDING  # a row the meta-test has not written (yet)
    ]


def status_table(results: str | Path) -> list[dict]:
    """One dict per sampled generation (see :class:`GenerationStatus`)."""
    return [asdict(r) for r in run_status(results).rows]


def _num(value: float, width: int = 12) -> str:
    return f"{value:>{width}.6g}" if math.isfinite(value) else f"{'-':>{width}}"


def format_status(st: RunStatus, *, max_rows: int | None = None) -> str:
    """A plain-text table of a :class:`RunStatus`."""
    state = st.state
    multi = st.front is not None or any(r.front_size is not None for r in st.rows)
    lines = [
        f"experiment {st.name}: {len(st.rows)}/{st.generations} generations sampled, "
        f"{st.n_aggregated} finished, {st.population_size} individuals each "
        f"({st.direction} {st.fitness_name}; {state})",
        f"{'gen':>5} {'done':>6} {'failed':>6} {'pending':>7} "
        + (f"{'front':>12} {'hypervolume':>12} " if multi else f"{'best':>12} {'mean':>12} ")
        + f"{'time':>8}",
    ]
    rows = st.rows
    if max_rows is not None and len(rows) > max_rows:
        lines.append(f"  ... {len(rows) - max_rows} earlier generations")
        rows = rows[len(rows) - max_rows :]
    for r in rows:
        if multi:
            size = f"{r.front_size:>12}" if r.front_size is not None else f"{'-':>12}"
            middle = f"{size} {_num(r.hypervolume)}"
        else:
            middle = f"{_num(r.best)} {_num(r.mean)}"
        lines.append(
            f"{r.generation:>5} {r.done:>6} {r.failed:>6} {r.pending:>7} {middle} "
            f"{duration(r.duration_s):>8}"
        )
    timing = f"elapsed {duration(st.elapsed_s)}"
    if math.isfinite(st.generation_s):
        timing += f", {st.generation_s:.3g} s per generation"
    if st.finished:
        timing += ", done"
    elif math.isfinite(st.eta_s):
        timing += f", ETA {duration(st.eta_s)}"
        if state == "not running":
            timing += f" once resumed (last result {duration(st.idle_s)} ago)"
    else:
        timing += ", ETA ? (no result yet)"
    lines.append(timing)
    if st.front is not None:
        f = st.front
        lines.append(
            f"Pareto front (generation {f['generation']}): {f['size']} individuals, hypervolume "
            f"{f['hypervolume']:.6g} ({', '.join(f['objectives'])}; reference point "
            f"{', '.join(f'{v:.4g}' for v in f['reference'])})"
        )
    if st.best is not None:
        b = st.best
        shown = ", ".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["params"].items()
        )
        lines.append(
            f"best: generation {b['generation']}, individual {b['individual']}, "
            f"fitness {b['fitness']:.6g}: {shown}"
        )
    for m in st.meta_test:
        result = f"{m['fitness']:.6g}" if m["status"] == DONE else "failed"
        lines.append(
            f"meta-test #{m['rank']} (generation {m['generation']}, individual "
            f"{m['individual']}) on held-out tasks: {result}"
        )
    return "\n".join(lines)


def render_status(results: str | Path, *, max_rows: int | None = None) -> str:
    """A plain-text table of the run's status plus its best individual so far."""
    return format_status(run_status(results), max_rows=max_rows)


def render_json(results: str | Path) -> str:
    return json.dumps(run_status(results).as_dict(), indent=1)


def watch(results: str | Path, interval: float = 2.0, *, until_done: bool = True) -> int:
    """Redraw the status every ``interval`` seconds until Ctrl-C (or the run is finished)."""
    try:
        while True:
            rows = shutil.get_terminal_size((100, 40)).lines - 8
            try:
                st = run_status(results)
                text = format_status(st, max_rows=max(rows, 5))
            except StoreError as exc:
                if not _run_starting(results):  # a mistyped path: the error `status` gives
                    raise
                st, text = None, f"waiting for the results store ({exc})"
            stamp = time.strftime("%H:%M:%S")
            print(f"\033[2J\033[H{text}\n(refreshed {stamp}; Ctrl-C to stop)", flush=True)
            if until_done and st is not None and st.finished and _meta_test_settled(st, results):
                return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


#: a run whose Snakefile wrote the resolved config this recently may still start its engine
STARTING_S = 60.0


def _run_starting(results: str | Path) -> bool:
    """Whether a run is creating this store: its engine lives, or Snakemake just wrote the
    resolved config the engine will read (the first step starts the engine)."""
    folder = _results_dir(results)
    if engine_alive(folder):
        return True
    try:
        return time.time() - (folder / "config.json").stat().st_mtime < STARTING_S
    except OSError:
        return False


def _meta_test_settled(st: RunStatus, results: str | Path) -> bool:
    """True unless the experiment has a meta-test that has not been written yet."""
    from l2lflow.store import read_store_attrs

    attrs = read_store_attrs(_results_dir(results)) or {}
    wants = (attrs.get("config", {}).get("optimizee", {}) or {}).get("meta_test") is not None
    return not wants or bool(st.meta_test)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value
