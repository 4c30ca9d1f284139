"""The GeNN optimizee ``genn.alif_rate``.

PyGeNN has no PyPI wheel (GeNN 5 is built from source with CUDA, see docs/gpu.md), so the
simulation tests skip unless ``pygenn`` imports; they use the ``single_threaded_cpu`` backend, so
a CPU machine with GeNN built from source runs them. What does not need GeNN runs everywhere.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from helpers import write_config

from l2lflow.optimizees import genn
from l2lflow.optimizees.base import EvaluationContext, resolve_optimizee

HAS_PYGENN = importlib.util.find_spec("pygenn") is not None
needs_pygenn = pytest.mark.skipif(
    not HAS_PYGENN,
    reason="pygenn does not import: GeNN 5 has no PyPI wheel; build it from source (docs/gpu.md)",
)

SMALL = {"n_neurons": 50, "sim_ms": 200.0, "warmup_ms": 20.0, "batch_size": 4}


def test_registration_and_backend_choice(monkeypatch) -> None:
    opt = resolve_optimizee("genn.alif_rate")
    assert opt.batched and opt.prefers_gpu and not opt.needs_gpu
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert genn.resolve_backend("auto") == "cuda"  # a worker of a GPU pool
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert genn.resolve_backend("auto") == "single_threaded_cpu"  # a CPU worker
    assert genn.resolve_backend("single_threaded_cpu") == "single_threaded_cpu"
    with pytest.raises(ValueError, match="backend must be one of auto, cuda"):
        genn.resolve_backend("opencl")


def test_config_with_genn_optimizee_validates(tmp_path: Path) -> None:
    """Validation checks the options against the signature without importing pygenn."""
    from l2lflow.config import ConfigError, load_config

    space = {k: dict(v) for k, v in genn.DEFAULT_SPACE.items()}
    ok = load_config(
        write_config(
            tmp_path,
            optimizee={"name": "genn.alif_rate", "options": {**SMALL, "backend": "auto"}},
            space=space,
        )
    )
    assert ok["optimizee"]["options"]["batch_size"] == 4
    with pytest.raises(ConfigError, match=r"optimizee.options.n_neuron: .* no option"):
        load_config(
            write_config(
                tmp_path,
                optimizee={"name": "genn.alif_rate", "options": {"n_neuron": 10}},
                space=space,
            )
        )


@pytest.mark.skipif(HAS_PYGENN, reason="pygenn imports here: the install hint is not shown")
def test_without_pygenn_an_evaluation_names_the_install() -> None:
    with pytest.raises(ImportError, match="GeNN 5.*from source.*docs/gpu.md"):
        genn.alif_rate([{}], [1], backend="single_threaded_cpu")


def _run(indices: list[int], params: list[dict], seeds: list[int], **options) -> list[dict]:
    contexts = [EvaluationContext(generation=0, individual=i, seed=seeds[i]) for i in indices]
    return genn.alif_rate(
        [params[i] for i in indices],
        [seeds[i] for i in indices],
        contexts=contexts,
        backend="single_threaded_cpu",
        **{**SMALL, **options},
    )


def _assert_same(a: dict, b: dict) -> None:
    """Bitwise the same metrics (NaN = NaN: a population without ALIF neurons has no ALIF rate)."""
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(np.float64(a[key]), np.float64(b[key]), equal_nan=True), key


@needs_pygenn
def test_batched_equals_one_by_one_and_compiles_once(tmp_path: Path) -> None:
    params = [
        {"drive": 1.1, "w_scale": 0.5},
        {"drive": 1.5, "beta": 2.0, "frac_adaptive": 0.8},
        {"drive": 2.5, "tau_m": 10.0},
        {"drive": 0.8},
        {"drive": 1.3, "tau_a": 50.0},
        {"drive": 2.0, "w_scale": 2.0},
    ]
    seeds = [3, 1, 4, 1, 5, 9]
    build_dir = str(tmp_path / "genn")
    before = genn.BUILD_COUNT
    whole = _run(list(range(6)), params, seeds, build_dir=build_dir)  # passes of 4, then 2 + pad
    alone = [_run([i], params, seeds, build_dir=build_dir)[0] for i in range(6)]
    reordered = _run([5, 3, 1], params, seeds, build_dir=build_dir)
    assert genn.BUILD_COUNT - before <= 1  # one model for every call of this shape
    for i in range(6):
        _assert_same(whole[i], alone[i])
    for k, i in enumerate([5, 3, 1]):
        _assert_same(reordered[k], alone[i])
    rates = [r["rate"] for r in alone]
    assert rates[2] > rates[0] > 0  # more drive, more spikes
    for r in alone:
        assert r["fitness"] == pytest.approx(((r["rate"] - 10.0) / 10.0) ** 2)


@needs_pygenn
def test_invalid_parameters_fail_only_their_individual(tmp_path: Path) -> None:
    params = [{"drive": 1.5}, {"tau_m": -1.0}, {"drive": 1.5}]
    out = _run([0, 1, 2], params, [7, 8, 9], build_dir=str(tmp_path / "genn"))
    assert np.isnan(out[1]["fitness"]) and np.isfinite(out[0]["fitness"])
    _assert_same(out[0], _run([0], params, [7, 8, 9], build_dir=str(tmp_path / "genn"))[0])
