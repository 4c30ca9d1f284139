"""The engine, Snakemake and ``l2lflow validate`` never import a user's optimizee module.

Why: a module with ``import nest`` at the top (NEST 3.10 wheel) makes OpenSSL segfault in the
importing process as soon as a TLS context is created, and the engine runs a TLS-secured Dask
cluster. The user module here (tests/usermodules/nest_at_top.py) is written as NEST users
write their scripts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import run_snakemake, write_config

pytestmark = [pytest.mark.resilience, pytest.mark.nest]

USERMODULES = Path(__file__).resolve().parent / "usermodules"

pytest.importorskip("nest")


@pytest.fixture
def user_path(monkeypatch) -> str:
    path = os.pathsep.join([str(USERMODULES), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    return path


def nest_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path,
        name="nestattop",
        generations=2,
        population_size=4,
        optimizer={"name": "cross_entropy"},
        optimizee={"name": "nest_at_top:tiny", "options": {"n_neurons": 20}},
        space={"drive_rate": {"low": 2000.0, "high": 20000.0, "scale": "log"}},
        execution={"workers": 2, "idle_timeout_s": 20},
    )


def test_validating_a_config_imports_no_user_module(tmp_path: Path, user_path: str) -> None:
    """What the engine and Snakemake do with a config (validate it, describe the optimizee),
    in a fresh process: the user's module (and with it NEST) stays out, so a TLS context
    afterwards works."""
    cfg = nest_config(tmp_path)
    code = textwrap.dedent(
        f"""
        import ssl, sys
        from l2lflow.config import load_config
        from l2lflow.optimizees.describe import describe_optimizee
        config = load_config({str(cfg)!r})
        info = describe_optimizee(config["optimizee"]["name"])
        assert "nest" not in sys.modules and "nest_at_top" not in sys.modules, "imported"
        ssl.create_default_context()
        print(info.name, info.batched, info.needs_gpu)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr[-2000:]}"
    assert proc.stdout.split() == ["nest_at_top:tiny", "False", "False"]


def test_user_errors_still_name_the_key(tmp_path: Path, user_path: str) -> None:
    from l2lflow.optimizees.base import OptimizeeError
    from l2lflow.optimizees.describe import describe_optimizee

    with pytest.raises(OptimizeeError, match=r"^optimizee.options.nope: .* has no option 'nope'"):
        describe_optimizee("nest_at_top:tiny", {"nope": 1})
    with pytest.raises(OptimizeeError, match=r"^optimizee.name: module 'nest_at_top' has no"):
        describe_optimizee("nest_at_top:missing", {})
    with pytest.raises(OptimizeeError, match=r"^optimizee.name: cannot import module 'no_such_"):
        describe_optimizee("no_such_module_here:f", {})


def test_a_user_module_with_import_nest_at_the_top_runs(tmp_path: Path, user_path: str) -> None:
    """A full Snakemake run of that module: it completes, every evaluation succeeded."""
    from l2lflow.store import open_results

    cfg = nest_config(tmp_path)
    run_snakemake(tmp_path, cfg)
    ds = open_results(tmp_path / "results" / "nestattop")
    fitness = np.asarray(ds["fitness"])
    assert fitness.shape == (2, 4) and np.isfinite(fitness).all(), fitness
    rates = np.asarray(ds["metric_rate"])
    assert (rates >= 0).all() and (rates > 0).any(), rates
