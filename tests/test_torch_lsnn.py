"""The PyTorch LSNN learning-to-learn optimizee: batched evaluation, its independence of the batch,
per-individual failures, and an outer loop that improves it (CPU; tiny networks).

Batched and one-by-one results are compared *bitwise*: on CPU every individual × task is its own
slice of ``bmm`` products and per-individual constants are computed in float64 NumPy (see the
module docstring of ``l2lflow.optimizees.torch_lsnn``), so the batch cannot change a single bit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import write_config

from l2lflow.optimizees.base import EvaluationContext

try:
    import torch  # noqa: F401

    HAS_TORCH = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_TORCH = False

needs_torch = pytest.mark.skipif(
    not HAS_TORCH, reason="torch is not installed (pip install -e '.[torch]')"
)

#: a network small enough for 2 busy CPU cores (the reference size is 200 neurons, 200 steps)
TINY = {
    "n_neurons": 16,
    "n_inputs": 8,
    "n_steps": 32,
    "inner_steps": 3,
    "n_tasks": 2,
    "n_points": 4,
}

PARAMS = [
    {
        "tau_m": 20.0,
        "tau_a": 200.0,
        "beta": 1.0,
        "inner_lr": 0.05,
        "w_scale": 2.0,
        "frac_adaptive": 0.4,
    },
    {
        "tau_m": 8.0,
        "tau_a": 900.0,
        "beta": 2.5,
        "inner_lr": 0.3,
        "w_scale": 0.5,
        "frac_adaptive": 0.9,
    },
    {
        "tau_m": 60.0,
        "tau_a": 40.0,
        "beta": 0.0,
        "inner_lr": 0.002,
        "w_scale": 5.0,
        "frac_adaptive": 0.0,
    },
    {
        "tau_m": 15.0,
        "tau_a": 500.0,
        "beta": 1.7,
        "inner_lr": 0.02,
        "w_scale": 1.0,
        "frac_adaptive": 1.0,
    },
    {
        "tau_m": 30.0,
        "tau_a": 100.0,
        "beta": 0.3,
        "inner_lr": 0.1,
        "w_scale": 3.0,
        "frac_adaptive": 0.25,
    },
]
SEEDS = [11, 22, 33, 44, 55]
GENERATIONS = 5
TASK_SEEDS = [7, 7, 7, 99, 7]  # individual 3 is on another task set (as in a meta-test)


def _evaluate(indices: list[int], params: list[dict] | None = None) -> list[dict]:
    from l2lflow.optimizees.torch_lsnn import lsnn

    params = params or PARAMS
    contexts = [
        EvaluationContext(generation=0, individual=i, seed=SEEDS[i], task_seed=TASK_SEEDS[i])
        for i in indices
    ]
    return lsnn(
        [params[i] for i in indices],
        [SEEDS[i] for i in indices],
        contexts=contexts,
        device="cpu",
        **TINY,
    )


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.shape == y.shape and x.tobytes() == y.tobytes(), f"{key}: {x} != {y}"


@needs_torch
def test_batched_equals_one_by_one_bitwise_whatever_the_batch() -> None:
    """Same bits per individual: alone, in the whole batch, in other splits and orders."""
    alone = [_evaluate([i])[0] for i in range(len(PARAMS))]
    whole = _evaluate(list(range(len(PARAMS))))
    split = _evaluate([0, 1]) + _evaluate([2, 3, 4])
    shuffled = dict(zip([4, 2, 0, 3, 1], _evaluate([4, 2, 0, 3, 1]), strict=True))
    for i in range(len(PARAMS)):
        for other in (whole[i], split[i], shuffled[i]):
            _assert_same(alone[i], other)
    fitness = [r["fitness"] for r in alone]
    assert all(np.isfinite(fitness)) and len(set(fitness)) == len(fitness)
    assert alone[0]["task_mse"].shape == (TINY["n_tasks"],)
    # learning happened: the inner loop changed the held-out error of every individual
    assert all(r["fitness"] != r["pre_mse"] for r in alone)


@needs_torch
def test_results_follow_the_seeds() -> None:
    """The evaluation seed sets the initial weights, the task seed the tasks; nothing else."""
    from l2lflow.optimizees.torch_lsnn import lsnn

    def one(seed: int, task_seed: int) -> float:
        ctx = EvaluationContext(generation=3, individual=5, seed=seed, task_seed=task_seed)
        return lsnn([PARAMS[0]], [seed], contexts=[ctx], device="cpu", **TINY)[0]["fitness"]

    assert one(1, 2) == one(1, 2)
    assert one(1, 2) != one(3, 2)
    assert one(1, 2) != one(1, 4)


@needs_torch
def test_nan_in_one_individual_fails_only_that_individual() -> None:
    """A diverging individual (NaN inside the torch tensors) and an invalid one get NaN fitness;
    the others keep the bits they have when evaluated without them, and the runner turns the
    NaN into a failed evaluation of that individual only."""
    from l2lflow.execution.task import run_batch
    from l2lflow.execution.work import EvaluationSpec

    bad = [dict(p) for p in PARAMS]
    bad[1]["inner_lr"] = 1e30  # Adam steps of 1e30: the weights overflow to inf, then NaN
    bad[3]["tau_m"] = -1.0  # outside the network's domain
    results = _evaluate(list(range(len(bad))), bad)
    assert np.isnan(results[1]["fitness"]) and np.isnan(results[3]["fitness"])
    assert np.isnan(results[1]["task_mse"]).all()
    for i in (0, 2, 4):
        _assert_same(results[i], _evaluate([i])[0])

    spec = EvaluationSpec(
        optimizee="torch.lsnn", options={**TINY, "device": "cpu"}, batched=True, isolate=False
    )
    items = [
        {
            "generation": 0,
            "individual": i,
            "seed": SEEDS[i],
            "params": bad[i],
            "attempt": 0,
            "task_seed": TASK_SEEDS[i],
        }
        for i in range(len(bad))
    ]
    out = run_batch(spec, items)
    assert [r["ok"] for r in out] == [True, False, True, False, True]
    assert out[1]["reason"] == "nonfinite" and out[3]["reason"] == "nonfinite"
    assert out[0]["fitness"] == results[0]["fitness"]
    assert out[0]["arrays"]["task_mse"].tobytes() == results[0]["task_mse"].tobytes()


@needs_torch
def test_outer_loop_improves_lsnn_learning(tmp_path: Path) -> None:
    """A real run (in-process Experiment on a local Dask cluster, batched dispatch in batches of
    4) with a fixed seed: the last generation learns new sines better than the first.

    Each generation draws its own tasks, so raw fitness of different generations is not
    comparable (a sine of amplitude 5 has 25 times the error of one of amplitude 1). Both
    populations, as stored, are therefore re-evaluated on one common set of held-out tasks.
    The outer loop tunes the two hyperparameters that matter most at this tiny size (inner
    learning rate and initial weight scale; the others keep their defaults), so that five
    generations of eight are enough for both the population mean and the best to improve.
    """
    import xarray as xr

    from l2lflow.config import load_config
    from l2lflow.experiment import Experiment
    from l2lflow.optimizees.torch_lsnn import DEFAULT_SPACE, lsnn

    SPACE = {
        "inner_lr": {**DEFAULT_SPACE["inner_lr"], "low": 1e-3, "high": 1.0},
        "w_scale": {**DEFAULT_SPACE["w_scale"], "low": 0.3, "high": 3.0},
    }
    from l2lflow.store import DONE

    options = {
        **TINY,
        "n_neurons": 24,
        "n_steps": 60,
        "n_points": 10,
        "inner_steps": 5,
        "n_tasks": 4,
        "device": "cpu",
    }
    config = load_config(
        write_config(
            tmp_path,
            name="lsnn",
            seed=3,
            generations=GENERATIONS,
            population_size=8,
            optimizer={"name": "cross_entropy"},
            optimizee={"name": "torch.lsnn", "options": options},
            space=SPACE,
            evaluation={"retries": 1, "timeout_s": 120, "batch_size": 4},
            execution={"workers": 1, "idle_timeout_s": 20},
        )
    )
    exp = Experiment(config)
    assert exp.optimizee.batched and exp.pool_name() == "cpu"  # no GPU pool here
    exp.run()
    ds = xr.open_zarr(Path(config["results"]) / "results.zarr")
    assert (ds.status.values == DONE).all()
    assert ds.task_mse.dims == ("generation", "individual", "task")
    np.testing.assert_array_equal(ds.task_mse.mean("task").values, ds.fitness.values)

    def held_out(generation: int) -> np.ndarray:
        params = [
            {n: float(ds[n].values[generation, i]) for n in SPACE}
            for i in range(ds.sizes["individual"])
        ]
        seeds = [int(s) for s in ds.seed.values[generation]]
        contexts = [
            EvaluationContext(generation=generation, individual=i, seed=s, task_seed=424242)
            for i, s in enumerate(seeds)
        ]
        out = lsnn(params, seeds, contexts=contexts, **{**options, "n_tasks": 8})
        return np.array([r["fitness"] for r in out])

    first, last = held_out(0), held_out(GENERATIONS - 1)
    print(
        f"held-out MSE, generation 0: mean {first.mean():.3f} best {first.min():.3f}; "
        f"generation {GENERATIONS - 1}: mean {last.mean():.3f} best {last.min():.3f}"
    )
    assert last.mean() < first.mean()
    assert last.min() < first.min()


def test_registry_works_without_torch_or_pygenn() -> None:
    """Importing the optimizee registry must not import torch or pygenn (they are imported when
    an evaluation runs); without them an evaluation fails with an install hint."""
    script = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "pygenn"):
                    raise ImportError(f"{name} blocked by the test")

        sys.meta_path.insert(0, Block())
        from l2lflow.optimizees.base import resolve_optimizee

        lsnn = resolve_optimizee("torch.lsnn")
        genn = resolve_optimizee("genn.alif_rate")
        assert lsnn.batched and lsnn.prefers_gpu and genn.batched, (lsnn, genn)
        assert "torch" not in sys.modules and "pygenn" not in sys.modules
        for fn in (lsnn.function, genn.function):
            try:
                fn([{}], [1])
            except ImportError as exc:
                print("hint:", exc)
            else:
                raise AssertionError("no ImportError")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    hints = [line for line in out.stdout.splitlines() if line.startswith("hint:")]
    assert len(hints) == 2
    assert "pip install" in hints[0] and "torch" in hints[0]
    assert "GeNN" in hints[1] and "docs/gpu.md" in hints[1]
