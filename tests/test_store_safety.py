"""The store under a SIGKILL at every point of its creation and growth, and ``l2lflow check``
on every variable's chunks.

A child process writes the store through :class:`ResultStore` with a failpoint armed
(``L2LFLOW_FAILPOINT``, see :mod:`l2lflow.failpoints`): it stops exactly there, the test kills
it with SIGKILL, looks at what is left with every reader (status, check, xarray) and resumes
it. Real processes, real kills, real Zarr stores; no Dask needed, so each case takes a second or
two. The whole pipeline under aimed kills: test_resilience.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_same_results

import l2lflow
from l2lflow.check import check_store
from l2lflow.config import validate_config
from l2lflow.status import run_status
from l2lflow.store import CREATING_PREFIX, ResultStore, StoreError

GENERATIONS = 3
POP = 5

#: the child: open or create the store, then add and finish the missing generations
#: (deterministic values)
CHILD = """
import json, sys
import numpy as np
from l2lflow import seeds
from l2lflow.config import validate_config
from l2lflow.space import ParameterSpace
from l2lflow.store import ResultStore

config = validate_config(json.loads(sys.argv[1]))
store = ResultStore.open_or_create(config["results"], config)
space = ParameterSpace.from_config(config["space"])
pop = int(config["population_size"])
for g in range(store.n_aggregated(), int(sys.argv[2])):  # each step idempotent, as a run's
    if g >= store.n_generations:
        x = np.random.default_rng(g).random((pop, space.dimension))
        store.append_generation(g, space.decode(x), seeds.evaluation_seeds(config["seed"], g, pop))
    store.write_results(g, [
        {"individual": i, "status": 1, "fitness": float(g + i), "metrics": {"m": 0.5 * i},
         "runtime": 1.0, "attempts": 1, "worker": "w", "error": "", "log": "", "finished_at": 1.0}
        for i in range(pop)
    ])
    store.save_checkpoint(g, {}, {"n_done": pop})
"""


def store_config(results: Path) -> dict:
    return validate_config(
        {
            "name": "safety",
            "seed": 5,
            "generations": GENERATIONS,
            "population_size": POP,
            "optimizer": {"name": "random"},
            "optimizee": {"name": "sphere"},
            "space": {
                "a": {"low": -1.0, "high": 1.0},
                "n": {"type": "int", "low": 1, "high": 9},
                "rule": {"type": "choice", "choices": ["stdp", "static"]},
            },
            "results": str(results),
        }
    )


def child(results: Path, failpoint: str | None = None, announce: Path | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("L2LFLOW_FAILPOINT")}
    if failpoint:
        env.update(L2LFLOW_FAILPOINT=failpoint, L2LFLOW_FAILPOINT_FILE=str(announce))
    cmd = [sys.executable, "-c", CHILD, json.dumps(store_config(results)), str(GENERATIONS)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stop_at(results: Path, failpoint: str, tmp_path: Path) -> subprocess.Popen:
    """The child, stopped at ``failpoint`` (still alive: the caller kills it)."""
    announce = tmp_path / "reached"
    proc = child(results, failpoint, announce)
    deadline = time.monotonic() + 120
    while not announce.exists():
        if proc.poll() is not None:
            raise AssertionError(f"{failpoint} never reached: {proc.stderr.read().decode()}")
        assert time.monotonic() < deadline, f"{failpoint} never reached"
        time.sleep(0.01)
    return proc


def finish(results: Path) -> None:
    proc = child(results)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("uninterrupted") / "results"
    finish(results)
    return results


#: failpoint -> generations committed when the kill lands there (None: no store yet)
KILL_POINTS = {
    "create.folder": None,
    "create.array#3": None,
    "create.commit": None,
    "sample.grow@0#1": 0,
    "sample.grow@1#1": 1,
    "sample.grow@1#6": 1,
    "sample.grow@1#15": 1,  # the last array grown: the generation coordinate
    "sample.commit@1": 1,
    "sample.committed@1": 2,
    "evaluate.columns@1": 2,
    "aggregate.commit@2": 3,
}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_at_every_point_of_growth_then_resume(point, tmp_path, uninterrupted) -> None:
    """SIGKILL at ``point``: every reader works and sees only committed generations (a
    half-grown one is not there), check finds no damage, and resuming ends bitwise equal to an
    uninterrupted store."""
    results = tmp_path / "results"
    proc = stop_at(results, point, tmp_path)
    committed = KILL_POINTS[point]
    if committed is None:
        # the store does not exist until it is complete: status says so, not "variable missing"
        with pytest.raises(StoreError, match="no results store here"):
            run_status(results)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if committed is None:
        assert not (results / "results.zarr").exists()
        for reader in (run_status, check_store, l2lflow.open_results):
            with pytest.raises(StoreError, match="no (l2lflow )?results store here"):
                reader(results)
    else:
        report = check_store(results)
        assert report.healthy, report.render()
        status = run_status(results)
        ds = l2lflow.open_results(results)
        assert ds.sizes["generation"] == len(status.rows) == committed, report.render()
        assert (ds.generation.values == np.arange(committed)).all()
    finish(results)
    assert_same_results(results, uninterrupted)
    assert check_store(results).healthy
    assert not list(results.glob(f"{CREATING_PREFIX}*")), "the killed creation's folder is left"


def test_status_cli_while_the_store_is_created(tmp_path) -> None:
    """``l2lflow status`` while the store is being created: one line saying there is no store
    yet (not a traceback, not "variable 'optimizer/state' is missing")."""
    results = tmp_path / "results"
    proc = stop_at(results, "create.array#5", tmp_path)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "l2lflow", "status", str(results)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        proc.kill()
        proc.wait()
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no results store here" in lines[0], out.stderr


def test_writer_shrinks_a_half_grown_generation(tmp_path) -> None:
    """The next writer drops the rows a killed one grew without committing them, and the
    generation is added again from scratch."""
    results = tmp_path / "results"
    proc = stop_at(results, "sample.grow@2#8", tmp_path)
    proc.kill()
    proc.wait()
    import zarr

    raw = zarr.open_group(str(results / "results.zarr"), mode="r", use_consolidated=False)
    grown = sorted(n for n in raw.array_keys() if raw[n].shape[:1] == (3,))
    # stopped at the 8th variable's growth (others grow beside it), never the coordinate: the
    # coordinate grows after every other variable
    assert len(grown) >= 8 and "generation" not in grown, grown
    store = ResultStore(results, mode="r+")
    assert store.n_generations == 2
    raw = zarr.open_group(str(results / "results.zarr"), mode="r", use_consolidated=False)
    assert all(raw[n].shape[0] == 2 for n in grown)


# ---------------------------------------------------------------------------- l2lflow check
@pytest.fixture(scope="module")
def meta_tested(tmp_path_factory) -> Path:
    """A finished store (through the child) with a meta-test written through the store."""
    results = tmp_path_factory.mktemp("meta") / "results"
    finish(results)
    store = ResultStore(results, mode="r+")
    store.write_meta_test(
        [
            {"generation": 2, "individual": 4, "ok": True, "fitness": 0.5, "metrics": {"m": 1.0}},
            {"generation": 1, "individual": 4, "ok": False, "fitness": None, "error": "boom"},
        ]
    )
    assert check_store(results).healthy, check_store(results).render()
    return results


def chunk_files(results: Path, name: str) -> list[Path]:
    return sorted(p for p in (results / "results.zarr" / name / "c").rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "name",
    [
        "meta_test_fitness",
        "meta_test_status",
        "meta_test_error",
        "metric_m",
        "n",  # an int parameter: its values may all equal the fill value (0)
        "rule",
        "worker",
        "log",
        "runtime",
        "optimizer/state",
        "individual",
        "generation",
    ],
)
def test_check_names_every_missing_chunk(name, meta_tested, tmp_path) -> None:
    import shutil

    results = tmp_path / "results"
    shutil.copytree(meta_tested, results)
    victim = chunk_files(results, name)[-1]
    victim.unlink()
    report = check_store(results)
    assert not report.healthy
    assert any(name in d and "missing" in d and str(victim) in d for d in report.damage), (
        report.render()
    )


def test_zarr_is_pinned_to_atomic_chunk_writes() -> None:
    """zarr-python writes a chunk atomically (temporary file + rename) only from 3.1.3 on; the
    crash safety above relies on it."""
    import tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (zarr,) = [Requirement(r) for r in project["project"]["dependencies"] if r.startswith("zarr")]
    assert not zarr.specifier.contains("3.1.2") and zarr.specifier.contains("3.1.3")
