"""The GeNN adapter (``l2lflow.optimizees.genn``) and its building block ``genn.alif_rate``.

PyGeNN has no PyPI wheel (GeNN 5 builds from its release source, see README), so the simulation
tests skip, with that reason, where ``pygenn`` does not import; CI builds it and sets
``L2LFLOW_REQUIRE_PYGENN=1``, under which they run (and fail if pygenn is missing) instead of
skipping. They use the ``single_threaded_cpu`` backend; each model shape compiles once per
process (~4 s) and is reused from the compiled-model cache by later processes.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import write_config

from l2lflow.optimizees import genn
from l2lflow.optimizees.base import EvaluationContext, resolve_optimizee

HAS_PYGENN = importlib.util.find_spec("pygenn") is not None
needs_pygenn = pytest.mark.skipif(
    not HAS_PYGENN and not os.environ.get("L2LFLOW_REQUIRE_PYGENN"),
    reason="pygenn does not import: GeNN 5 has no PyPI wheel; build it from source (README)",
)

SMALL = {"n_neurons": 50, "sim_ms": 200.0, "warmup_ms": 20.0, "batch_size": 4}
REPO = Path(__file__).resolve().parents[1]


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
    # the CPU backend supports only a batch of 1; CUDA compiles the batch asked for
    assert genn.batch_size_for("single_threaded_cpu", 64) == 1
    assert genn.batch_size_for("cuda", 64) == 64
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        genn.batch_size_for("cuda", 0)


def test_passes_pad_with_the_first_item_and_stack_follows_genns_shapes() -> None:
    assert genn.passes(5, 2) == [([0, 1], [0, 1]), ([2, 3], [2, 3]), ([4], [4, 4])]
    assert genn.passes(2, 1) == [([0], [0]), ([1], [1])]
    assert genn.stack([1.5], 1).shape == (1,)  # one value per entry, batch of 1
    assert genn.stack([np.zeros(3)] * 2, 2).shape == (2, 3)  # per neuron, batch of 2
    assert genn.stack([1.5, 2.5], 2).shape == (2, 1)


def test_compiled_models_go_to_a_cache_folder_not_the_working_directory(
    monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("L2LFLOW_GENN_CACHE", raising=False)
    assert genn.cache_root(str(tmp_path)) == tmp_path
    assert str(genn.cache_root()).endswith(f"l2lflow-genn-{os.getuid()}")
    monkeypatch.setenv("L2LFLOW_GENN_CACHE", str(tmp_path / "c"))
    assert genn.cache_root() == tmp_path / "c"


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


def test_without_pygenn_an_evaluation_names_the_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pygenn", None)  # as where it is not installed
    with pytest.raises(ImportError, match="no PyPI wheel.*release source.*docs/gpu.md"):
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
        assert np.array_equal(np.asarray(a[key]), np.asarray(b[key]), equal_nan=True), key


@needs_pygenn
def test_batched_equals_one_by_one_and_compiles_once() -> None:
    """On the CPU backend the individuals of a call run one after the other in fresh loads of
    one compiled model: any grouping and order gives the same bits, nothing leaks."""
    params = [
        {"drive": 1.1, "w_scale": 0.5},
        {"drive": 1.5, "beta": 2.0, "frac_adaptive": 0.8},
        {"drive": 2.5, "tau_m": 10.0},
        {"drive": 0.8},
        {"drive": 1.3, "tau_a": 50.0},
        {"drive": 2.0, "w_scale": 2.0},
    ]
    seeds = [3, 1, 4, 1, 5, 9]
    whole = _run(list(range(6)), params, seeds)
    before = genn.BUILD_COUNT
    alone = [_run([i], params, seeds)[0] for i in range(6)]
    reordered = _run([5, 3, 1], params, seeds)
    assert genn.BUILD_COUNT == before  # the model of this shape was built by the first call
    for i in range(6):
        _assert_same(whole[i], alone[i])
    for k, i in enumerate([5, 3, 1]):
        _assert_same(reordered[k], alone[i])
    rates = [r["rate"] for r in alone]
    assert rates[2] > rates[0] > 0  # more drive, more spikes
    for r in alone:
        assert r["fitness"] == pytest.approx(((r["rate"] - 10.0) / 10.0) ** 2)


@needs_pygenn
def test_invalid_parameters_fail_only_their_individual() -> None:
    params = [{"drive": 1.5}, {"tau_m": -1.0}, {"drive": 1.5}]
    out = _run([0, 1, 2], params, [7, 8, 9])
    assert np.isnan(out[1]["fitness"]) and np.isfinite(out[0]["fitness"])
    _assert_same(out[0], _run([0], params, [7, 8, 9])[0])
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['tau'\] for genn.alif_rate"):
        _run([0], [{"tau": 1.0}], [1])


_CACHE_CHILD = """
import os, sys
from l2lflow.optimizees import genn
os.chdir(sys.argv[2])  # GeNN must not write into the working directory
out = genn.alif_rate([{}], [1], backend="single_threaded_cpu", build_dir=sys.argv[1],
                     n_neurons=20, sim_ms=50.0, warmup_ms=0.0)
print(repr(out[0]["rate"]))
"""


@needs_pygenn
def test_a_second_process_reuses_the_compiled_model(tmp_path: Path) -> None:
    """Two processes with one cache: the second finds the model built (GeNN's hash matches,
    nothing is regenerated or recompiled) and gets the same result; neither writes into its
    working directory."""
    cache, cwd = tmp_path / "cache", tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}

    def child() -> str:
        proc = subprocess.run(
            [sys.executable, "-c", _CACHE_CHILD, str(cache), str(cwd)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip().splitlines()[-1]

    first = child()
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    generated = sorted((folder).glob("*_CODE/*.cc"))
    assert generated, list(folder.iterdir())
    library = next(folder.glob("*_CODE/librunner*"))
    stamps = {p: p.stat().st_mtime_ns for p in [*generated, library]}
    assert child() == first
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # not rewritten, not relinked
    assert list(cwd.iterdir()) == []


@needs_pygenn
def test_a_backend_this_pygenn_lacks_is_refused_or_falls_back_with_a_warning(
    monkeypatch, caplog
) -> None:
    """PyGeNN builds its CUDA backend only with CUDA_PATH set at install time: an explicit
    ``cuda`` on such a build is refused with the reason; ``auto`` on a worker given a GPU runs on
    the CPU backend and says so."""
    from pygenn.genn_model import backend_modules

    if "cuda" in backend_modules:
        assert genn.available_backend("cuda") == "cuda"
        return
    with pytest.raises(ValueError, match="backend 'cuda' is not in this PyGeNN build.*CUDA_PATH"):
        genn.available_backend("cuda")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with caplog.at_level("WARNING", logger="l2lflow.genn"):
        assert genn.available_backend("auto") == "single_threaded_cpu"
    assert "built without the CUDA backend" in caplog.text
