"""End-to-end: Snakemake rules + engine + Dask workers + Zarr store, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import (
    TAG_VAR,
    assert_same_results,
    engine_processes,
    run_snakemake,
    snakemake_cmd,
    write_config,
)

import l2lflow
from l2lflow.store import DONE, FAILED


def _wait_for_no_engine(workdir: Path, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = engine_processes(workdir)
        if not left:
            return []
        time.sleep(0.2)
    return engine_processes(workdir)


def test_snakemake_run_opens_in_xarray(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, generations=3, population_size=8)
    dry = run_snakemake(tmp_path, cfg, "-n")
    for rule in ("sample", "evaluate", "aggregate"):
        assert rule in dry.stdout
    run_snakemake(tmp_path, cfg)
    results = tmp_path / "results" / "t"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(results / "results.zarr")
    assert dict(ds.sizes) == {"generation": 3, "individual": 8}
    assert ds.fitness.dims == ("generation", "individual")
    assert (ds.status.values == DONE).all()
    # fitness is the sphere of the stored parameters
    expected = ds.a.values**2 + ds.b.values**2
    np.testing.assert_allclose(ds.fitness.values, expected, rtol=1e-14)
    assert (ds.b.values > 0.01 - 1e-12).all() and (ds.b.values <= 10).all()
    assert l2lflow.open_results(results).fitness.shape == (3, 8)
    assert ds.attrs["l2lflow"]["config"]["seed"] == 7
    assert _wait_for_no_engine(tmp_path) == []
    # a rerun has nothing to do
    again = run_snakemake(tmp_path, cfg)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_extending_generations_continues(tmp_path: Path) -> None:
    short = write_config(tmp_path, name="ext", generations=2)
    run_snakemake(tmp_path, short)
    longer = write_config(tmp_path, name="ext", generations=4)
    proc = run_snakemake(tmp_path, longer)
    # only the two new generations ran: 2 × (sample, evaluate, aggregate) + all
    assert "7 of 7 steps" in proc.stdout + proc.stderr or "7 of 7" in proc.stderr
    fresh = write_config(tmp_path / "fresh", name="ext", generations=4)
    run_snakemake(tmp_path / "fresh", fresh)
    assert_same_results(tmp_path / "results" / "ext", tmp_path / "fresh" / "results" / "ext")


def test_changed_seed_is_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, generations=1)
    run_snakemake(tmp_path, cfg)
    changed = write_config(tmp_path, generations=2, seed=8)
    proc = run_snakemake(tmp_path, changed, check=False)
    assert proc.returncode != 0
    assert "seed: 7 -> 8" in proc.stderr


def test_sigkill_during_evaluate_then_resume_is_bit_identical(tmp_path: Path) -> None:
    """Kill Snakemake, its jobs and the engine mid-evaluate; the rerun repeats only in-flight work."""
    counter = tmp_path / "count"
    counter.mkdir()
    opts = {"counter_dir": str(counter), "sleep_s": 0.05}
    common = dict(
        generations=3,
        population_size=16,
        optimizee={"name": "test.counting", "options": opts},
        optimizer={"name": "ga"},
    )
    cfg = write_config(tmp_path, name="kill", **common)
    proc = subprocess.Popen(
        snakemake_cmd(tmp_path, cfg),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, TAG_VAR: str(tmp_path)},
    )
    # wait until generation 1 is half evaluated, then kill everything of the run
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done_g1 = [p for p in os.listdir(counter) if p.startswith("g1_")]
        if len(done_g1) >= 8:
            break
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail("generation 1 never started")
    os.killpg(proc.pid, signal.SIGKILL)
    for line in engine_processes(tmp_path):
        os.kill(int(line.split(":")[0]), signal.SIGKILL)
    proc.wait()
    before = len(os.listdir(counter))
    run_snakemake(tmp_path, cfg, "--unlock")
    run_snakemake(tmp_path, cfg)
    files = os.listdir(counter)
    per_individual: dict[str, int] = {}
    for name in files:
        key = "_".join(name.split("_")[:2])
        per_individual[key] = per_individual.get(key, 0) + 1
    assert len(per_individual) == 3 * 16, "every individual evaluated"
    repeated = sum(n - 1 for n in per_individual.values())
    # only what was in flight (2 workers × 2 chunks × a few individuals) runs twice
    assert repeated <= 16, f"{repeated} evaluations repeated"
    assert all(k.startswith("g1_") for k, n in per_individual.items() if n > 1)
    print(f"kill test: {before} evaluations before the kill, {repeated} repeated")

    ref_counter = tmp_path / "ref_count"
    ref_counter.mkdir()
    ref_opts = {"counter_dir": str(ref_counter), "sleep_s": 0.05}
    ref = write_config(
        tmp_path / "ref",
        name="kill",
        **{**common, "optimizee": {"name": "test.counting", "options": ref_opts}},
    )
    # the counter folder is an optimizee option, i.e. part of the result config: use the same one
    ref.write_text(ref.read_text().replace(str(ref_counter), str(counter)))
    run_snakemake(tmp_path / "ref", ref)
    assert_same_results(tmp_path / "results" / "kill", tmp_path / "ref" / "results" / "kill")


def test_one_and_two_workers_give_identical_stores(tmp_path: Path) -> None:
    from l2lflow.config import load_config
    from l2lflow.experiment import Experiment

    for workers in (1, 2):
        cfg = write_config(
            tmp_path / f"w{workers}",
            name="w",
            generations=3,
            population_size=12,
            optimizer={"name": "cmaes"},
            optimizee={"name": "rastrigin", "options": {"noise": 0.1}},
            execution={"workers": workers},
        )
        Experiment(load_config(cfg)).run()
    assert_same_results(tmp_path / "w1" / "results" / "w", tmp_path / "w2" / "results" / "w")


def test_bad_evaluations_are_recorded_and_the_run_completes(tmp_path: Path) -> None:
    faults = {"1": "raise", "2": "nan", "3": "hang", "4": "abort", "5": "inf"}
    cfg = write_config(
        tmp_path,
        name="faults",
        generations=2,
        population_size=8,
        optimizee={"name": "test.faulty", "options": {"faults": faults}},
        evaluation={"retries": 1, "timeout_s": 2, "failure_fitness": 1e6},
    )
    run_snakemake(tmp_path, cfg, timeout=240)
    ds = l2lflow.open_results(tmp_path / "results" / "faults").load()
    for g in range(2):
        status = ds.status.values[g]
        assert list(np.flatnonzero(status == FAILED)) == [1, 2, 3, 4, 5]
        assert (ds.fitness.values[g][[1, 2, 3, 4, 5]] == 1e6).all()
        # raise, hang and abort are retried; a NaN/inf fitness is deterministic: not retried
        assert list(ds.attempts.values[g][[1, 2, 3, 4, 5]]) == [2, 1, 2, 2, 1]
        err = ds.error.values[g]
        assert "[exception]" in err[1] and "injected failure" in err[1]
        assert "Traceback" in err[1]
        assert "[nonfinite]" in err[2] and "nan" in err[2]
        assert "[timeout]" in err[3]
        assert "[crash]" in err[4] and "SIGABRT" in err[4]
        assert "[nonfinite]" in err[5] and "inf" in err[5]
        assert (status[[0, 6, 7]] == DONE).all()
    assert _wait_for_no_engine(tmp_path) == []
