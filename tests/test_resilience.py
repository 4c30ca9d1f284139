"""Resilience: kill anywhere, lose a worker, crash evaluations, run twice, leave no orphans.

Real processes throughout (Snakemake, the engine, Dask workers, sandboxes); nothing is mocked.
Every process a test starts carries a unique tag in its environment (``L2LFLOW_TEST_TAG``), which
every descendant inherits (engine, Dask workers, sandboxes), so the no-orphan checks look at
exactly this test's processes and never at another run on the same machine.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import TAG_VAR, assert_same_results, snakemake_cmd, tagged_processes, write_config

from l2lflow.store import PENDING

pytestmark = pytest.mark.resilience

PHASES = ("sample", "evaluate", "aggregate")
SENTINEL = {"sample": "sampled", "evaluate": "evaluated", "aggregate": "aggregated"}
#: how long the processes of a run may take to go away once it is over (killed, failed, done):
#: the engine's grace/idle timeout (5 s in these tests) plus closing a Dask cluster on a busy box
ORPHAN_TIMEOUT_S = 45.0


# ---------------------------------------------------------------------------- processes
def new_tag() -> str:
    return f"resilience-{uuid.uuid4().hex}"


def tagged_env(tag: str, **extra: str) -> dict[str, str]:
    return {**os.environ, TAG_VAR: tag, "PYTHONUNBUFFERED": "1", **extra}


def wait_no_processes(tag: str, timeout: float = ORPHAN_TIMEOUT_S) -> tuple[dict[int, str], float]:
    """Poll until no process of ``tag`` is left; return what is left and how long it took."""
    start = time.monotonic()
    while True:
        left = tagged_processes(tag)
        if not left or time.monotonic() - start > timeout:
            return left, time.monotonic() - start
        time.sleep(0.1)


def describe(procs: dict[int, str]) -> str:
    return "\n".join(f"  {pid}: {cmd[:200]}" for pid, cmd in sorted(procs.items()))


def kind_of(cmd: str) -> str:
    if "l2lflow.engine" in cmd:
        return "engine"
    if "_sandbox_main" in cmd:
        return "sandbox"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    if "spawn_main" in cmd or "distributed" in cmd:
        return "dask_worker"
    if "snakemake" in cmd:
        return "snakemake"
    if "l2lflow step" in cmd:
        return "step_client"
    return "other"


def step_clients(tag: str) -> list[tuple[str, int]]:
    """(op, generation) of the ``l2lflow step`` clients of ``tag`` running now."""
    out = []
    for cmd in tagged_processes(tag).values():
        parts = cmd.split()
        if "l2lflow" in parts and "step" in parts and "--generation" in parts:
            op = parts[parts.index("step") + 1]
            out.append((op, int(parts[parts.index("--generation") + 1])))
    return out


def engine_pid(results: Path) -> int | None:
    """The engine of ``results`` from its lock file, if that process is alive and is one."""
    try:
        pid = int((results / ".l2lflow.lock").read_text().split()[0])
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if b"l2lflow.engine" in cmd else None


def start_snakemake(
    workdir: Path,
    cfg: Path,
    tag: str,
    log: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    plain: bool = False,
) -> subprocess.Popen:
    """Snakemake in a session of its own (its process group id is its pid); ``plain``: the
    user's command, without ``--rerun-incomplete``."""
    cmd = plain_cmd(workdir, cfg, *extra) if plain else snakemake_cmd(workdir, cfg, *extra)
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=tagged_env(tag, **(env or {})),
            start_new_session=True,
        )


def snakemake(workdir: Path, cfg: Path, tag: str, *extra: str, timeout: float = 300):
    return subprocess.run(
        snakemake_cmd(workdir, cfg, *extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=tagged_env(tag),
        stdin=subprocess.DEVNULL,
    )


def plain_cmd(workdir: Path, cfg: Path, *extra: str) -> list[str]:
    """The command a user types: no ``--rerun-incomplete`` (the workflow's default profile
    supplies it where a rerun is safe)."""
    return [arg for arg in snakemake_cmd(workdir, cfg, *extra) if arg != "--rerun-incomplete"]


def kill_run(proc: subprocess.Popen, results: Path) -> None:
    """SIGKILL Snakemake's whole process group and the engine, as a lost node or `kill -9` would."""
    engine = engine_pid(results)
    for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), lambda: os.kill(engine, 9)):
        try:
            kill()
        except (ProcessLookupError, TypeError):
            pass
    proc.wait()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------- store and counters
def evaluation_counts(counter_dir: Path, *, meta_test: bool = False) -> collections.Counter:
    """(generation, individual) -> how often test.counting evaluated it (in the meta-test, if
    ``meta_test``: the chosen individual's generation and index)."""
    counts: collections.Counter = collections.Counter()
    for name in os.listdir(counter_dir):
        if name.startswith("meta_") != meta_test:
            continue
        g, i, _ = name.removeprefix("meta_").split("_", 2)
        counts[(int(g[1:]), int(i[1:]))] += 1
    return counts


def committed(results: Path) -> set[tuple[int, int]]:
    """(generation, individual) whose result the store holds (status done or failed), as its
    readers see it: committed generations only."""
    from l2lflow.store import ResultStore

    if not (results / "results.zarr" / "zarr.json").exists():
        return set()
    store = ResultStore(results)
    status = np.asarray(store.array("status")[: store.n_generations, :])
    return {(int(g), int(i)) for g, i in zip(*np.nonzero(status != PENDING), strict=True)}


def counting_config(tmp_path: Path, name: str, counter: Path, **overrides: Any) -> Path:
    counter.mkdir(parents=True, exist_ok=True)
    options = {"counter_dir": str(counter), "sleep_s": overrides.pop("sleep_s", 0.03)}
    settings: dict[str, Any] = dict(
        name=name,
        seed=11,
        generations=5,
        population_size=8,
        optimizer={"name": "ga"},
        optimizee={"name": "test.counting", "options": options},
        evaluation={"retries": 1, "timeout_s": 60},
        execution={"workers": 2, "idle_timeout_s": 5},
    )
    settings.update(overrides)
    return write_config(tmp_path, **settings)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The 5-generation test.counting experiment, uninterrupted (in one process)."""
    from l2lflow.config import load_config
    from l2lflow.experiment import Experiment

    tmp = tmp_path_factory.mktemp("reference")
    cfg = counting_config(tmp, "ref", tmp / "count")
    Experiment(load_config(cfg)).run()
    return tmp / "results" / "ref"


# ---------------------------------------------------------------------------- 1. kill anywhere
def choose_kill_points(rng: random.Random, n: int, generations: int, population: int) -> list:
    """``n`` distinct (generation, phase) steps in run order, covering every phase, with the
    moment to kill inside each: for evaluate, after how many evaluations of the generation
    have started; for sample/aggregate, a delay after the step's client appeared."""
    steps = [(g, phase) for g in range(generations) for phase in PHASES]
    while True:
        chosen = sorted(rng.sample(range(len(steps)), n))
        if {steps[k][1] for k in chosen} >= set(PHASES) or n < len(PHASES):
            break
    points = []
    for k in chosen:
        g, phase = steps[k]
        started = rng.randint(0, population - 1)
        delay = rng.uniform(0.0, 0.08)
        points.append({"generation": g, "phase": phase, "started": started, "delay": delay})
    return points


def wait_and_kill(proc, tag: str, results: Path, counter: Path, point: dict) -> dict[str, Any]:
    """Wait for the kill point while the run goes on, then SIGKILL everything. What was hit."""
    g, phase = point["generation"], point["phase"]
    sentinel = results / "steps" / f"{g:06d}.{SENTINEL[phase]}"
    deadline = time.monotonic() + 240
    seen = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return {"hit": None, "finished": True}
        if (phase, g) in step_clients(tag):
            seen = True
            break
        if sentinel.exists():  # the step came and went between two looks: kill right now
            break
        time.sleep(0.005)
    else:
        raise AssertionError(f"kill point {point} never came")
    if seen and phase == "evaluate":
        while time.monotonic() < deadline and not sentinel.exists():
            if sum(1 for n in os.listdir(counter) if n.startswith(f"g{g}_")) >= point["started"]:
                break
            time.sleep(0.003)
    elif seen:
        time.sleep(point["delay"])
    running = step_clients(tag)
    kill_run(proc, results)
    hit = running[0] if running else ("between steps", g)
    return {"hit": hit, "finished": False}


def run_kill_anywhere(tmp_path: Path, reference: Path, n_points: int, seed: int) -> dict:
    rng = random.Random(seed)
    counter = tmp_path / "count"
    cfg = counting_config(tmp_path, "ref", counter)
    results = tmp_path / "results" / "ref"
    points = choose_kill_points(rng, n_points, generations=5, population=8)
    tag = new_tag()
    log = tmp_path / "snakemake.log"
    figures: dict[str, Any] = {"points": points, "hits": [], "in_flight": 0, "cleanup_s": []}
    for k, point in enumerate(points):
        if k:
            snakemake(tmp_path, cfg, tag, "--unlock")
        before_committed = committed(results)
        before_counts = evaluation_counts(counter)
        proc = start_snakemake(tmp_path, cfg, tag, log)
        outcome = wait_and_kill(proc, tag, results, counter, point)
        if outcome["finished"]:
            assert proc.returncode == 0, tail(log)
            break
        left, took = wait_no_processes(tag)
        assert not left, f"left after SIGKILL at {outcome['hit']}:\n{describe(left)}"
        figures["cleanup_s"].append(took)
        figures["hits"].append(outcome["hit"])
        now_committed = committed(results)
        counts = evaluation_counts(counter)
        # nothing the store held before this run was evaluated again by it
        for key in before_committed:
            assert counts[key] == before_counts[key], f"{key} evaluated again after its commit"
        # evaluated in this run but not committed when killed: in flight (will run again)
        started = {key for key in counts if counts[key] > before_counts[key]}
        figures["in_flight"] += len(started - now_committed)
    snakemake(tmp_path, cfg, tag, "--unlock")
    final = snakemake(tmp_path, cfg, tag, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    left, _ = wait_no_processes(tag)
    assert not left, describe(left)

    assert_same_results(results, reference)
    counts = evaluation_counts(counter)
    assert set(counts) == {(g, i) for g in range(5) for i in range(8)}, "every individual ran"
    figures["evaluations"] = sum(counts.values())
    figures["repeated"] = sum(n - 1 for n in counts.values())
    assert figures["repeated"] <= figures["in_flight"], figures
    return figures


def report(name: str, figures: dict) -> None:
    hits = collections.Counter(h[0] for h in figures["hits"])
    print(
        f"\n{name}: {len(figures['hits'])} kill points hit of {len(figures['points'])} chosen; "
        f"phases hit {dict(hits)}; evaluations {figures['evaluations']} for 40 individuals, "
        f"{figures['repeated']} repeated (in flight at the kills: {figures['in_flight']}); "
        f"processes gone after each kill within {max(figures['cleanup_s'], default=0):.1f} s"
    )
    for point, hit in zip(figures["points"], figures["hits"], strict=False):
        print(f"  planned {point['phase']} g{point['generation']} -> killed during {hit}")


@pytest.mark.slow
def test_kill_anywhere_many_points(tmp_path: Path, reference: Path) -> None:
    figures = run_kill_anywhere(tmp_path, reference, n_points=12, seed=7)
    report("kill anywhere (slow)", figures)
    assert len(figures["hits"]) >= 10
    assert {h[0] for h in figures["hits"]} >= set(PHASES), figures["hits"]


# ---------------------------------------------------------------------------- 1b. aimed kills
#: the phases of a run that kills are aimed at; the store's failpoints (l2lflow.failpoints) say
#: where exactly within a phase
KILL_PHASES = ("store creation", "sample", "evaluate", "aggregate", "meta-test", "between steps")
AIMED_GENERATIONS = 3
AIMED_POPULATION = 6
META_SENTINEL = f"meta_test.after_{AIMED_GENERATIONS - 1:06d}"
STEP_OF_SENTINEL = {"sampled": "sample", "evaluated": "evaluate", "aggregated": "aggregate"}


@dataclass(frozen=True)
class Aim:
    """Where to SIGKILL the whole run (Snakemake's process group and the engine)."""

    phase: str
    #: ``L2LFLOW_FAILPOINT``: the engine waits at this point of the store's writes for the kill
    failpoint: str | None = None
    #: or: kill once this many evaluations of (generation, or -1: the meta-test) have started
    evaluations: tuple[int, int] | None = None
    #: between steps: once the failpoint (or this step's client) is reached, Snakemake is stopped
    #: (SIGSTOP) and the step goes on; the kill comes as soon as the step's sentinel file exists,
    #: so Snakemake never records the step as finished (its output is "incomplete")
    sentinel: str | None = None

    def __str__(self) -> str:
        if self.failpoint:
            where = self.failpoint
        elif self.evaluations:
            g, k = self.evaluations
            where = f"{k} evaluation(s) of {'the meta-test' if g < 0 else f'generation {g}'}"
        else:
            where = "client running"
        return f"{where} -> {self.sentinel} written" if self.sentinel else where


def between(step: str, generation: int | None = None) -> Aim:
    """Just after ``step`` (sampled, evaluated, aggregated, meta_test) wrote its sentinel."""
    if step == "meta_test":
        return Aim("between steps", "meta_test.committed", sentinel=META_SENTINEL)
    point = {"sampled": "sample", "aggregated": "aggregate"}.get(step)
    sentinel = f"{generation:06d}.{step}"
    return Aim("between steps", point and f"{point}.committed@{generation}", sentinel=sentinel)


def aimed_config(tmp_path: Path, counter: Path) -> Path:
    """3 generations × 6 individuals of test.counting, then a meta-test of the best 2."""
    import yaml

    cfg = counting_config(
        tmp_path,
        "aimed",
        counter,
        generations=AIMED_GENERATIONS,
        population_size=AIMED_POPULATION,
    )
    config = yaml.safe_load(cfg.read_text())
    config["optimizee"]["meta_test"] = {"top_k": 2}
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    return cfg


@pytest.fixture(scope="module")
def aimed_reference(tmp_path_factory) -> Path:
    """The aimed-kill experiment, uninterrupted (in one process)."""
    from l2lflow.config import load_config
    from l2lflow.experiment import Experiment

    tmp = tmp_path_factory.mktemp("aimed-reference")
    Experiment(load_config(aimed_config(tmp, tmp / "count"))).run()
    return tmp / "results" / "aimed"


def started_evaluations(counter: Path, generation: int) -> int:
    """Evaluations test.counting started for ``generation`` (-1: in the meta-test)."""
    prefix = "meta_" if generation < 0 else f"g{generation}_"
    return sum(1 for n in os.listdir(counter) if n.startswith(prefix))


def reach_aim(
    aim: Aim, proc: subprocess.Popen, tag: str, log: Path, results: Path, counter: Path, announce
) -> None:
    """Wait (while the run goes on) until ``aim`` is reached; the caller kills the run then."""
    if aim.failpoint:
        wait_for(announce.exists, proc, log, f"failpoint {aim.failpoint}")
    elif aim.evaluations:
        g, k = aim.evaluations
        start = started_evaluations(counter, g)
        wait_for(lambda: started_evaluations(counter, g) >= start + k, proc, log, str(aim))
    else:
        assert aim.sentinel is not None
        g, step = aim.sentinel.split(".")
        client = (STEP_OF_SENTINEL[step], int(g))
        wait_for(lambda: client in step_clients(tag), proc, log, f"the {client} step")
    if aim.sentinel:
        os.kill(proc.pid, signal.SIGSTOP)  # Snakemake will not see the step finish
        if aim.failpoint:
            Path(f"{announce}.go").touch()
        sentinel = results / "steps" / aim.sentinel
        deadline = time.monotonic() + 120
        while not sentinel.exists():
            assert time.monotonic() < deadline, f"{sentinel} never appeared:\n{tail(log)}"
            time.sleep(0.002)


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equal (NaN included); strings by value."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "OTU":
        return a.tolist() == b.tolist()
    return a.tobytes() == b.tobytes()


def assert_committed_values_equal(results: Path, reference: Path) -> int:
    """What the store's readers see after a kill equals the uninterrupted run's: every
    committed generation's parameters and seeds, every finished evaluation's results, every
    checkpoint, every written meta-test row. Returns the committed generations."""
    import l2lflow
    from l2lflow.store import PROVENANCE_VARIABLES, ResultStore

    got = l2lflow.open_results(results).load()
    ref = l2lflow.open_results(reference).load()
    n = got.sizes["generation"]
    finished = got.status.values != PENDING
    sampled = {"generation", "seed", *ResultStore(results).parameter_names}
    meta_written = (
        got.meta_test_status.values != PENDING if "meta_test_status" in got else np.zeros(0, bool)
    )
    for name, var in got.variables.items():
        if name in PROVENANCE_VARIABLES or name == "individual":
            continue
        a, b = var.values, ref[name].values
        if var.dims[:1] == ("generation",):
            b = b[:n]
            if name not in sampled:  # unfinished cells hold fill values until evaluated
                a, b = a[finished], b[finished]
        elif var.dims[:1] == ("meta_test",):
            a, b = a[meta_written], b[meta_written]
        assert same_values(a, b), f"{name} differs from the uninterrupted run's"
    store, ref_store = ResultStore(results), ResultStore(reference)
    for g in range(store.n_aggregated()):
        assert store.checkpoint(g) == ref_store.checkpoint(g), f"checkpoint {g} differs"
    return n


def assert_readable_after_kill(results: Path, reference: Path) -> str:
    """Every reader works on what the kill left (check healthy, status, xarray) and sees only
    values equal to the uninterrupted run's; returns check's notes."""
    from l2lflow.check import check_store
    from l2lflow.status import run_status
    from l2lflow.store import StoreError, read_store_attrs

    try:
        if read_store_attrs(results) is None:
            raise StoreError("no store")
    except StoreError:
        # none yet: the kill came while it was being created
        assert not (results / "results.zarr").exists(), list((results / "results.zarr").iterdir())
        return "no store yet"
    report = check_store(results)
    assert report.healthy, report.render()
    status = run_status(results)
    n = assert_committed_values_equal(results, reference)
    assert len(status.rows) == n
    return "; ".join(report.notes)


def run_aimed_kills(tmp_path: Path, reference: Path, aims: list[Aim]) -> dict[str, Any]:
    """Kill the run at each aim in turn, each time followed by the plain command (after
    ``--unlock``: Snakemake's own lock survives a SIGKILL); then finish it. The final store
    equals the uninterrupted run's, and only evaluations in flight at a kill ran again."""
    counter = tmp_path / "count"
    cfg = aimed_config(tmp_path, counter)
    results = tmp_path / "results" / "aimed"
    tag = new_tag()
    log = tmp_path / "snakemake.log"
    announce = tmp_path / "failpoint-reached"
    kills = []
    for k, aim in enumerate(aims):
        if k:
            snakemake(tmp_path, cfg, tag, "--unlock")
        for path in (announce, Path(f"{announce}.go")):
            path.unlink(missing_ok=True)
        before_committed = committed(results)
        before_counts = evaluation_counts(counter)
        env = {"L2LFLOW_FAILPOINT_FILE": str(announce)}
        if aim.failpoint:
            env["L2LFLOW_FAILPOINT"] = aim.failpoint
        with open(log, "a") as out:
            out.write(f"\n==== aim {k}: {aim.phase}: {aim}\n")
        proc = start_snakemake(tmp_path, cfg, tag, log, env=env, plain=True)
        reach_aim(aim, proc, tag, log, results, counter, announce)
        kill_run(proc, results)
        left, _ = wait_no_processes(tag)
        assert not left, f"left after the kill at {aim}:\n{describe(left)}"
        notes = assert_readable_after_kill(results, reference)
        counts = evaluation_counts(counter)
        for key in before_committed:
            assert counts[key] == before_counts[key], f"{key} evaluated again after its commit"
        started = {key for key in counts if counts[key] > before_counts[key]}
        in_flight = len(started - committed(results))
        kills.append({"phase": aim.phase, "aim": str(aim), "in_flight": in_flight, "notes": notes})
    snakemake(tmp_path, cfg, tag, "--unlock")
    final = subprocess.run(
        plain_cmd(tmp_path, cfg),
        capture_output=True,
        text=True,
        timeout=600,
        env=tagged_env(tag),
        stdin=subprocess.DEVNULL,
    )
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-5000:]
    left, _ = wait_no_processes(tag)
    assert not left, describe(left)
    assert_same_results(results, reference)
    from l2lflow.check import check_store

    assert check_store(results).healthy
    counts = evaluation_counts(counter)
    everyone = {(g, i) for g in range(AIMED_GENERATIONS) for i in range(AIMED_POPULATION)}
    assert set(counts) == everyone, "every individual ran"
    repeated = sum(n - 1 for n in counts.values())
    in_flight = sum(k["in_flight"] for k in kills)
    assert repeated <= in_flight, (repeated, in_flight, kills)
    meta = evaluation_counts(counter, meta_test=True)
    return {
        "kills": kills,
        "repeated": repeated,
        "in_flight": in_flight,
        "meta_test_evaluations": sum(meta.values()),
    }


def aimed_table(title: str, outcomes: dict[str, dict[str, Any]]) -> str:
    """The closing note's table: phase -> kills -> identical finals, repeated vs in flight."""
    lines = [
        title,
        "| phase | kills | identical final stores | evaluations repeated / in flight at the "
        "kills | meta-test evaluations (2 without kills) |",
        "|---|---|---|---|---|",
    ]
    for phase, o in outcomes.items():
        lines.append(
            f"| {phase} | {len(o['kills'])} | {o['identical']} of 1 | "
            f"{o['repeated']} / {o['in_flight']} | {o['meta_test_evaluations']} |"
        )
    for phase, o in outcomes.items():
        for kill in o["kills"]:
            lines.append(f"  {phase}: {kill['aim']}; in flight {kill['in_flight']}")
            if kill["notes"]:
                lines.append(f"      check: {kill['notes'][:300]}")
    return "\n".join(lines)


#: the default suite: one kill in each phase of one run, in run order
FEW_AIMS = [
    Aim("store creation", "create.array#4"),
    Aim("sample", "sample.grow@0#6"),
    between("aggregated", 0),
    Aim("evaluate", "evaluate.columns@1"),
    Aim("meta-test", "meta_test.array#3"),
]

#: the slow suite: one run per phase, killed at every point of that phase (35 in all)
MANY_AIMS = {
    "store creation": [
        Aim("store creation", point)
        for point in (
            "create.folder",
            "create.array#2",
            "create.array#9",
            "create.commit",
            "create.committed",
        )
    ],
    "sample": [
        Aim("sample", point)
        for point in (
            "sample.grow@0#1",
            "sample.grow@0#7",
            "sample.commit@0",
            "sample.grow@1#4",
            "sample.grow@1#12",
            "sample.committed@1",
            "sample.grow@2#10",
            "sample.commit@2",
        )
    ],
    "evaluate": [
        Aim("evaluate", evaluations=(0, 1)),
        Aim("evaluate", "evaluate.columns@0"),
        Aim("evaluate", evaluations=(1, 2)),
        Aim("evaluate", "evaluate.committed@1"),
        Aim("evaluate", evaluations=(2, 1)),
        Aim("evaluate", "evaluate.columns@2"),
    ],
    "aggregate": [
        Aim("aggregate", point)
        for point in (
            "aggregate.commit@0",
            "aggregate.committed@0",
            "aggregate.commit@1",
            "aggregate.commit@2",
            "aggregate.committed@2",
        )
    ],
    "meta-test": [
        Aim("meta-test", evaluations=(-1, 1)),
        Aim("meta-test", "meta_test.array#2"),
        Aim("meta-test", "meta_test.array#5"),
        Aim("meta-test", "meta_test.commit"),
        Aim("meta-test", "meta_test.committed"),
    ],
    "between steps": [
        between("sampled", 0),
        between("evaluated", 0),
        between("aggregated", 1),
        between("sampled", 2),
        between("evaluated", 2),
        between("meta_test"),
    ],
}


def test_meta_test_step_rerun_evaluates_nothing(tmp_path: Path, aimed_reference: Path) -> None:
    """The meta-test step run again on a store that holds its complete results (a kill just
    after it, before Snakemake recorded it) evaluates nothing and returns the same scores."""
    import shutil

    from l2lflow.config import load_config, validate_config
    from l2lflow.experiment import Experiment

    results = tmp_path / "results" / "aimed"
    shutil.copytree(aimed_reference, results)
    config = load_config(aimed_reference.parents[1] / "aimed.yaml")
    counter = Path(config["optimizee"]["options"]["counter_dir"])
    before = evaluation_counts(counter, meta_test=True)
    experiment = Experiment(validate_config({**config, "results": str(results)}))
    try:
        again = experiment.meta_test()
    finally:
        experiment.close()
    assert evaluation_counts(counter, meta_test=True) == before
    assert again["meta_test"] == 2 and all(isinstance(f, float) for f in again["scores"])
    assert_same_results(results, aimed_reference)


@pytest.mark.slow  # 6 Snakemake runs (~50 s idle); the 35-kill version is slow too
@pytest.mark.timeout(900)  # minutes on a loaded 2-core machine
def test_aimed_kills_one_per_phase(tmp_path: Path, aimed_reference: Path) -> None:
    """A SIGKILL of the whole run in store creation, sample (a half-grown generation), just
    after aggregate (its sentinel written, Snakemake never told), evaluate (results written,
    their status not) and meta-test; after each the store is healthy and readable, and the
    plain command resumes: the final store equals the uninterrupted run's."""
    outcome = run_aimed_kills(tmp_path, aimed_reference, FEW_AIMS)
    by_phase = {k["phase"] for k in outcome["kills"]}
    assert by_phase == set(KILL_PHASES) - {"aggregate"}  # between steps: after aggregate
    print(
        "\n"
        + aimed_table("aimed kills (default suite): one run", {"all": {**outcome, "identical": 1}})
    )


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 41 Snakemake runs
def test_aimed_kills_at_every_point_of_every_phase(tmp_path: Path, aimed_reference: Path) -> None:
    """35 aimed kills: for each phase one run killed at every point of that phase, each kill
    followed by the plain command; every run ends bitwise equal to the uninterrupted run."""
    assert sum(len(aims) for aims in MANY_AIMS.values()) >= 30
    outcomes = {}
    for phase, aims in MANY_AIMS.items():
        outcome = run_aimed_kills(tmp_path / phase.replace(" ", "-"), aimed_reference, aims)
        outcomes[phase] = {**outcome, "identical": 1}
    table = aimed_table("aimed kills (slow suite): one run per phase", outcomes)
    print("\n" + table)
    (tmp_path / "aimed-kills.md").write_text(table + "\n")


# ---------------------------------------------------------------------------- helpers for a live run
def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def wait_for(predicate, proc: subprocess.Popen, log: Path, what: str, timeout: float = 240):
    """Poll ``predicate`` until true; fail with the log if the run ended or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended (code {proc.returncode}) before {what}:\n{tail(log)}"
            )
        time.sleep(0.01)
    raise AssertionError(f"{what} never happened:\n{tail(log)}")


def started_in(counter: Path, generation: int) -> int:
    return sum(1 for n in os.listdir(counter) if n.startswith(f"g{generation}_"))


def store_status(results: Path) -> np.ndarray:
    import zarr

    root = zarr.open_group(str(results / "results.zarr"), mode="r", use_consolidated=False)
    return np.asarray(root["status"][...]), np.asarray(root["attempts"][...])


def start_reference_run(tmp_path: Path) -> tuple[Path, Path, Path, str, Path, subprocess.Popen]:
    """The ``reference`` experiment under Snakemake, slowed to 0.25 s per evaluation so a test
    can interrupt it mid-generation: (counter dir, config, results, tag, log, Snakemake)."""
    counter = tmp_path / "count"
    cfg = counting_config(tmp_path, "ref", counter, sleep_s=0.25)
    tag = new_tag()
    log = tmp_path / "snakemake.log"
    proc = start_snakemake(tmp_path, cfg, tag, log)
    return counter, cfg, tmp_path / "results" / "ref", tag, log, proc


def repeated_evaluations(counter: Path) -> dict[tuple[int, int], int]:
    """(generation, individual) -> how many times more than once test.counting evaluated it."""
    return {k: n - 1 for k, n in evaluation_counts(counter).items() if n > 1}


# ---------------------------------------------------------------------------- 2. worker loss
def test_worker_killed_mid_evaluation(tmp_path: Path, reference: Path) -> None:
    """SIGKILL a Dask worker (and so its sandbox) mid-evaluation: the run completes, every
    individual is done once in the store, and the store equals the uninterrupted run's."""
    from l2lflow.store import DONE

    counter, cfg, results, tag, log, proc = start_reference_run(tmp_path)

    def busy_worker() -> int | None:
        if started_in(counter, 1) < 1:
            return None
        procs = tagged_processes(tag)
        for pid, cmd in procs.items():
            if kind_of(cmd) == "sandbox":
                worker = parent_of(pid)
                if worker in procs and kind_of(procs[worker]) == "dask_worker":
                    return worker
        return None

    worker = wait_for(busy_worker, proc, log, "a worker evaluating generation 1")
    before = evaluation_counts(counter)
    os.kill(worker, signal.SIGKILL)
    assert proc.wait(timeout=300) == 0, tail(log)
    left, _ = wait_no_processes(tag)
    assert not left, describe(left)

    status, attempts = store_status(results)
    assert status.shape == (5, 8) and (status == DONE).all()
    repeated = repeated_evaluations(counter)
    print(
        f"\nworker loss: killed worker pid {worker} after {sum(before.values())} evaluations; "
        f"repeated evaluations {sum(repeated.values())} ({sorted(repeated)}); "
        f"attempts in the store {dict(collections.Counter(attempts.ravel().tolist()))}"
    )
    # only what that worker held (a chunk) ran again, all of generation 1 or 2
    assert sum(repeated.values()) <= 8 and all(g in (1, 2) for g, _ in repeated)
    assert_same_results(results, reference)


@pytest.mark.slow
def test_ctrl_c_then_resume_is_bit_identical(tmp_path: Path, reference: Path) -> None:
    """Ctrl-C (SIGINT to Snakemake's process group, as a terminal sends it) in generation 1,
    then ``--unlock`` and the same command: the store equals the uninterrupted run's, and only
    evaluations of the interrupted generation ran twice."""
    counter, cfg, results, tag, log, proc = start_reference_run(tmp_path)
    wait_for(lambda: started_in(counter, 1) >= 3, proc, log, "generation 1's evaluations")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) != 0, tail(log)
    left, _ = wait_no_processes(tag)
    assert not left, describe(left)
    before = evaluation_counts(counter)

    snakemake(tmp_path, cfg, tag, "--unlock")
    rerun = snakemake(tmp_path, cfg, tag)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    repeated = repeated_evaluations(counter)
    print(
        f"\nctrl-c: interrupted after {sum(before.values())} evaluations; repeated "
        f"{sum(repeated.values())} ({sorted(repeated)})"
    )
    assert sum(repeated.values()) <= 8 and all(g == 1 for g, _ in repeated)
    assert_same_results(results, reference)


# ---------------------------------------------------------------------------- 3. bad evaluations
def test_crashing_evaluations_are_retried_then_penalised(tmp_path: Path) -> None:
    """Segfault, exit and raise (hang, abort, NaN and inf: test_pipeline.py's
    test_bad_evaluations_are_recorded_and_the_run_completes): each retried ``retries`` times,
    recorded as failed with its reason, given the failure fitness; the run completes. With
    faults on the first attempt only, the retry succeeds and the individual is done."""
    import l2lflow
    from l2lflow.config import load_config
    from l2lflow.experiment import Experiment
    from l2lflow.store import DONE, FAILED

    faults = {"1": "segfault", "2": "exit", "3": "raise"}
    for name, first_only in (("always", False), ("first", True)):
        cfg = write_config(
            tmp_path,
            name=name,
            generations=1,
            population_size=5,
            optimizee={
                "name": "test.faulty",
                "options": {"faults": faults, "only_first_attempt": first_only},
            },
            evaluation={"retries": 2, "timeout_s": 20, "failure_fitness": 1e9},
            execution={"workers": 1},
        )
        Experiment(load_config(cfg)).run()
        ds = l2lflow.open_results(tmp_path / "results" / name).load()
        status, attempts = ds.status.values[0], ds.attempts.values[0]
        err, fitness = ds.error.values[0], ds.fitness.values[0]
        if first_only:
            assert (status == DONE).all() and list(attempts) == [1, 2, 2, 2, 1]
            expected = ds.a.values[0] ** 2 + ds.b.values[0] ** 2
            np.testing.assert_allclose(fitness, expected, rtol=1e-14)
            continue
        assert list(status) == [DONE, FAILED, FAILED, FAILED, DONE]
        assert list(attempts) == [1, 3, 3, 3, 1]
        assert (fitness[1:4] == 1e9).all()
        assert "[crash]" in err[1] and "SIGSEGV" in err[1]
        assert "[crash]" in err[2] and "exit code 3" in err[2]
        assert "[exception]" in err[3] and "injected failure in individual 3" in err[3]


# ---------------------------------------------------------------------------- 5. concurrency
def test_second_run_on_the_same_results_is_refused(tmp_path: Path, reference: Path) -> None:
    """While a run goes on: Snakemake in the same folder (its lock), Snakemake in another folder
    and ``l2lflow run`` on the same results (the store's lock) are refused, each with a clear
    message; the first run's store ends bitwise equal to an undisturbed run's."""
    import sys

    counter = tmp_path / "count"
    cfg = counting_config(tmp_path, "ref", counter, sleep_s=0.8)
    results = tmp_path / "results" / "ref"
    tag = new_tag()
    log = tmp_path / "snakemake.log"
    proc = start_snakemake(tmp_path, cfg, tag, log)
    wait_for(lambda: ("evaluate", 1) in step_clients(tag), proc, log, "generation 1's evaluate")

    other = tmp_path / "elsewhere"
    other.mkdir()
    # all three at once, while the first run is in its second of five generations
    attempts = {
        "snakemake-same-folder": snakemake_cmd(tmp_path, cfg),
        # --keep-incomplete: a failed job must not delete an output the first run just wrote
        "snakemake-other-folder": snakemake_cmd(other, cfg, "--keep-incomplete"),
        "l2lflow-run": [sys.executable, "-m", "l2lflow", "run", str(cfg)],
    }
    running = {
        name: subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=tagged_env(tag),
        )
        for name, cmd in attempts.items()
    }
    out = {}
    t0 = time.monotonic()
    for name, p in running.items():
        stdout, stderr = p.communicate(timeout=120)
        out[name] = (p.returncode, stdout + stderr, stderr)
        print(f"{name}: refused after {time.monotonic() - t0:.1f} s")
    assert proc.poll() is None, "the first run ended before the others were refused"

    code, text, _ = out["snakemake-same-folder"]
    assert code != 0 and "Directory cannot be locked" in text, text[-3000:]
    code, text, _ = out["snakemake-other-folder"]
    assert code != 0 and f"{results} is in use by another" in text, text[-3000:]
    code, _, stderr = out["l2lflow-run"]
    lines = stderr.strip().splitlines()
    assert code != 0 and len(lines) == 1, stderr
    assert "is in use by another l2lflow run" in lines[0] and str(results) in lines[0]

    assert proc.wait(timeout=300) == 0, tail(log)
    left, _ = wait_no_processes(tag)
    assert not left, describe(left)
    counts = evaluation_counts(counter)
    assert set(counts.values()) == {1}, "the refused runs evaluated nothing"
    assert_same_results(results, reference)
    from l2lflow.check import check_store

    assert check_store(results).healthy


# ---------------------------------------------------------------------------- 6. no orphans
@pytest.mark.parametrize("how", ["ctrl-c", "failed-step", "sigkill-snakemake"])
def test_no_processes_left_after_an_interruption(how: str, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to Snakemake's process group, as a terminal sends it), a failing step
    (its client killed) or SIGKILL of Snakemake and its jobs only (the engine, in a session of
    its own, lives on and must notice): Snakemake exits != 0 and the engine, Dask workers and
    sandboxes are gone within the engine's grace. Success and SIGKILL of everything: the
    kill-anywhere tests."""
    counter = tmp_path / "count"
    cfg = counting_config(tmp_path, "orph", counter, sleep_s=0.2, generations=2)
    tag = new_tag()
    log = tmp_path / "snakemake.log"
    proc = start_snakemake(tmp_path, cfg, tag, log)
    wait_for(lambda: started_in(counter, 0) >= 2, proc, log, "generation 0's evaluations")
    kinds_before = collections.Counter(kind_of(c) for c in tagged_processes(tag).values())
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    elif how == "sigkill-snakemake":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        clients = [
            pid
            for pid, cmd in tagged_processes(tag).items()
            if kind_of(cmd) == "step_client" and " evaluate " in f" {cmd} "
        ]
        assert clients, tagged_processes(tag)
        os.kill(clients[0], signal.SIGTERM)
    code = proc.wait(timeout=120)
    assert code != 0, tail(log)
    left, took = wait_no_processes(tag)
    assert not left, f"left after {how}:\n{describe(left)}"
    print(f"\n{how}: snakemake exit {code}; {dict(kinds_before)} gone {took:.1f} s after it")
    assert kinds_before["engine"] == 1 and kinds_before["sandbox"] >= 1
