"""The worker pools start when a run claims its engine, not at its first evaluate step.

Snakemake's ``onstart`` claims the engine with the run's config (``l2lflow step claim --config``):
the engine opens the experiment and starts the Dask workers and each worker's sandbox (with the
optimizee imported there) while Snakemake starts the first steps. A failed early start is kept
and reported by the first step that needs the workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from helpers import TAG_VAR, tagged_processes, write_config

from l2lflow.config import validate_config
from l2lflow.experiment import Experiment

#: generous: a loaded machine starts two workers and two sandboxes in far less
UP_WITHIN_S = 120.0


def _resolved_config(path: Path) -> dict:
    return validate_config(yaml.safe_load(path.read_text()))


def _step(results: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "l2lflow", "step", *args, "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _sandboxes(tag: str) -> list[str]:
    return [cmd for cmd in tagged_processes(tag).values() if "_sandbox_main" in cmd]


def test_the_claim_starts_workers_and_their_sandboxes_before_any_step(tmp_path: Path) -> None:
    config = _resolved_config(
        write_config(tmp_path, name="early", execution={"workers": 2, "idle_timeout_s": 60})
    )
    results = Path(config["results"])
    results.mkdir(parents=True)
    config_json = results / "config.json"
    config_json.write_text(json.dumps(config))
    env = {**os.environ, "L2LFLOW_RUN_ID": "early-run", TAG_VAR: str(tmp_path)}

    claim = _step(results, "claim", "--config", str(config_json), env=env)
    assert claim.returncode == 0, claim.stderr
    try:
        deadline = time.monotonic() + UP_WITHIN_S
        while len(_sandboxes(str(tmp_path))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        # no step has run yet, and both workers have started their sandboxes
        assert len(_sandboxes(str(tmp_path))) == 2, tagged_processes(str(tmp_path))
        sampled = zarr.open_group(results / "results.zarr", mode="r")["fitness"].shape[0]
        assert sampled == 0

        # the steps then use these workers: same results as an experiment run in-process
        for op in ("sample", "evaluate", "aggregate"):
            step = _step(results, op, "--config", str(config_json), "--generation", "0", env=env)
            assert step.returncode == 0, step.stderr
        assert len(_sandboxes(str(tmp_path))) == 2  # the warm sandboxes evaluated: no others
    finally:
        _step(results, "shutdown", env=env)
    deadline = time.monotonic() + UP_WITHIN_S
    while tagged_processes(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not tagged_processes(str(tmp_path)), "the engine left processes behind"

    from l2lflow import open_results

    early = open_results(results).load()
    reference_config = {**config, "results": str(tmp_path / "reference")}
    exp = Experiment(reference_config)
    try:
        exp.sample(0)
        exp.evaluate(0)
        exp.aggregate(0)
    finally:
        exp.close()
    reference = open_results(tmp_path / "reference").load()
    np.testing.assert_array_equal(early.fitness.values, reference.fitness.values)


def test_a_failed_early_start_is_reported_by_the_first_evaluate(tmp_path: Path) -> None:
    config = _resolved_config(write_config(tmp_path, name="broken"))
    results = Path(config["results"])
    results.mkdir(parents=True)
    (results / "dask").write_text("a file where the workers' folder goes\n")
    exp = Experiment(config, start_pools=True)
    try:
        exp.sample(0)  # needs no workers: unaffected
        with pytest.raises(OSError, match="dask"):
            exp.evaluate(0)
        (results / "dask").unlink()  # fixed: the next evaluate starts the pools itself
        assert exp.evaluate(0)["done"] == config["population_size"]
    finally:
        exp.close()
