"""GeNN (PyGeNN 5) optimizee: a recurrent LIF/ALIF network tuned to a target firing rate, a whole
batch of individuals per simulation, the model compiled once per worker.

Why it is built this way. Generating and compiling a GeNN model takes seconds to minutes (a
``make`` of CUDA code); a simulation of this network takes milliseconds. So the model is built
**once per worker process** for a given shape (neurons, batch size, backend, time step,
precision) and kept; every individual's parameters are *state variables*, written into the loaded
model before each run, never compiled in:

- per-individual constants (membrane and adaptation decay) are ``READ_ONLY_SHARED_NEURON``
  variables: one value per batch entry, shared by the population's neurons;
- per-neuron values of an individual (adaptation strength, 0 for LIF neurons, and the bias
  current) are ``READ_ONLY_DUPLICATE`` variables: one copy per batch entry;
- recurrent weights are a ``READ_ONLY_DUPLICATE`` ``g`` of a DENSE synapse group with a custom
  static-pulse weight update model (the built-in ``StaticPulse`` shares ``g`` across the batch).

GeNN's batch mode (``model.batch_size``) then simulates ``batch_size`` independent networks in
one kernel launch per time step: batch entry ``b`` is individual ``b`` of the chunk. A chunk
smaller than the compiled batch is padded with copies of its first individual (discarded); a
larger one runs in several passes. Before each pass the model is unloaded and loaded again
(:meth:`GeNNModel.unload` / :meth:`GeNNModel.load`, no code generation): that resets time, state
and spike queues, so nothing of one pass leaks into the next.

Randomness never comes from GeNN's per-thread generators (whose streams depend on the batch slot
and the backend): weights and bias currents are drawn in NumPy from the individual's seed, so an
individual's result does not depend on the chunk it is in (bitwise on ``single_threaded_cpu``;
the CUDA backend may differ from the CPU one in the last bits of float arithmetic).

Backends: ``backend="auto"`` uses ``cuda`` when this worker was given a GPU (a non-empty
``CUDA_VISIBLE_DEVICES``, as l2lflow's GPU pools set), else ``single_threaded_cpu``; either can
be forced. PyGeNN is imported only when an evaluation runs; it has no PyPI wheel: install GeNN 5
from source (``docs/gpu.md``).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from l2lflow.optimizees.base import EvaluationContext, checked_params, register_optimizee

DEFAULT_PARAMS: dict[str, float] = {
    "tau_m": 20.0,  # membrane time constant (ms)
    "tau_a": 200.0,  # adaptation time constant (ms)
    "beta": 1.0,  # adaptation strength of ALIF neurons: threshold = 1 + beta * a
    "w_scale": 1.0,  # recurrent weights ~ N(0, (w_scale / sqrt(n))^2), dense, no autapses
    "frac_adaptive": 0.4,  # fraction of ALIF neurons
    "drive": 1.2,  # mean bias current (threshold = 1)
}

DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "tau_m": {"low": 5.0, "high": 100.0, "scale": "log"},
    "tau_a": {"low": 20.0, "high": 2000.0, "scale": "log"},
    "beta": {"low": 0.0, "high": 3.0},
    "w_scale": {"low": 0.1, "high": 5.0, "scale": "log"},
    "frac_adaptive": {"low": 0.0, "high": 1.0},
    "drive": {"low": 0.5, "high": 3.0},
}

INSTALL_HINT = (
    "genn.alif_rate needs PyGeNN 5 (GeNN), which has no PyPI wheel: build GeNN from source "
    "with CUDA (git clone https://github.com/genn-team/genn; export CUDA_PATH=/usr/local/cuda; "
    "pip install .) as described in docs/gpu.md"
)

BACKENDS = ("auto", "cuda", "single_threaded_cpu")


def _pygenn() -> Any:
    try:
        import pygenn
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return pygenn


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``cuda`` when this process was given a GPU, else ``single_threaded_cpu``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return (
            "cuda" if os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() else "single_threaded_cpu"
        )
    return backend


@dataclass
class CompiledNetwork:
    """A built GeNN model and its populations, kept for the life of the worker process."""

    model: Any
    neurons: Any
    synapses: Any
    n_neurons: int
    batch_size: int
    backend: str
    loaded: bool = False


#: (n_neurons, batch_size, backend, dt, precision) -> CompiledNetwork; one build per key and process
_COMPILED: dict[tuple[Any, ...], CompiledNetwork] = {}
#: how many times a model was generated and compiled in this process (tests check it stays 1)
BUILD_COUNT = 0


def compiled_network(
    n_neurons: int,
    batch_size: int,
    backend: str,
    dt: float,
    precision: str,
    build_dir: str | None = None,
) -> CompiledNetwork:
    """The network for this shape, generated and compiled on first use in this process."""
    global BUILD_COUNT
    key = (int(n_neurons), int(batch_size), backend, float(dt), precision)
    if key in _COMPILED:
        return _COMPILED[key]
    _pygenn()
    from pygenn import (
        GeNNModel,
        VarAccess,
        create_neuron_model,
        create_weight_update_model,
        init_postsynaptic,
        init_weight_update,
    )

    alif = create_neuron_model(
        "l2lflow_alif",
        vars=[
            ("V", "scalar"),
            ("A", "scalar"),
            ("SpikeCount", "unsigned int"),
            ("Alpha", "scalar", VarAccess.READ_ONLY_SHARED_NEURON),
            ("Rho", "scalar", VarAccess.READ_ONLY_SHARED_NEURON),
            ("Beta", "scalar", VarAccess.READ_ONLY_DUPLICATE),
            ("Ibias", "scalar", VarAccess.READ_ONLY_DUPLICATE),
        ],
        sim_code="""
        V = (Alpha * V) + ((1.0 - Alpha) * (Isyn + Ibias));
        A = Rho * A;
        """,
        threshold_condition_code="V >= 1.0 + (Beta * A)",
        reset_code="""
        V -= 1.0 + (Beta * A);
        A += 1.0 - Rho;
        SpikeCount++;
        """,
    )
    batched_static = create_weight_update_model(
        "l2lflow_batched_static_pulse",
        vars=[("g", "scalar", VarAccess.READ_ONLY_DUPLICATE)],
        pre_spike_syn_code="addToPost(g);",
    )
    name = f"l2lflow_alif_n{n_neurons}_b{batch_size}"
    model = GeNNModel(precision, name, backend=backend)
    model.dt = float(dt)
    model.batch_size = int(batch_size)
    zeros = {
        "V": 0.0,
        "A": 0.0,
        "SpikeCount": 0,
        "Alpha": 0.0,
        "Rho": 0.0,
        "Beta": 0.0,
        "Ibias": 0.0,
    }
    neurons = model.add_neuron_population("alif", int(n_neurons), alif, {}, zeros)
    synapses = model.add_synapse_population(
        "recurrent",
        "DENSE",
        neurons,
        neurons,
        init_weight_update(batched_static, {}, {"g": 0.0}),
        init_postsynaptic("DeltaCurr"),
    )
    root = build_dir or os.path.join(tempfile.gettempdir(), f"l2lflow-genn-{os.getuid()}")
    path = os.path.join(root, f"{os.getpid()}")  # one folder per process: no concurrent makes
    os.makedirs(path, exist_ok=True)
    model.build(path_to_model=path)
    BUILD_COUNT += 1
    net = CompiledNetwork(model, neurons, synapses, int(n_neurons), int(batch_size), backend)
    _COMPILED[key] = net
    return net


def _put(variable: Any, values: np.ndarray) -> None:
    """Write ``values`` (batch-major) into a loaded variable's host copy and push it."""
    view = variable.view
    view[...] = np.asarray(values, dtype=view.dtype).reshape(view.shape)
    variable.push_to_device()


def _individual_arrays(p: dict[str, float], seed: int, n: int, dt: float) -> dict[str, Any]:
    """An individual's variable values, from its parameters and its seed only (float64)."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7,)))
    w = rng.standard_normal((n, n)) * (p["w_scale"] / math.sqrt(n))
    np.fill_diagonal(w, 0.0)
    n_adaptive = round(p["frac_adaptive"] * n)
    beta = np.where(np.arange(n) < n_adaptive, p["beta"], 0.0)
    bias = p["drive"] * (1.0 + 0.1 * rng.standard_normal(n))
    return {
        "Alpha": math.exp(-dt / p["tau_m"]),
        "Rho": math.exp(-dt / p["tau_a"]),
        "Beta": beta,
        "Ibias": bias,
        "g": w.reshape(-1),  # row-major pre x post, the order of a DENSE matrix
    }


def _valid(p: dict[str, float]) -> bool:
    """Whether finite parameters describe a network that can be simulated."""
    return (
        p["tau_m"] > 0
        and p["tau_a"] > 0
        and p["beta"] >= 0
        and p["w_scale"] >= 0
        and 0.0 <= p["frac_adaptive"] <= 1.0
    )


def _checked(params: dict[str, Any]) -> tuple[dict[str, float], bool]:
    """Parameters with defaults filled in, and whether they describe a valid network."""
    return checked_params(params, DEFAULT_PARAMS, "genn.alif_rate", _valid)


@register_optimizee("genn.alif_rate", batched=True, prefers_gpu=True)
def alif_rate(
    params: list[dict[str, Any]],
    seeds: list[int],
    *,
    contexts: list[EvaluationContext] | None = None,
    n_neurons: int = 1000,
    sim_ms: float = 1000.0,
    warmup_ms: float = 100.0,
    target_rate_hz: float = 10.0,
    dt: float = 1.0,
    batch_size: int = 64,
    backend: str = "auto",
    precision: str = "float",
    build_dir: str | None = None,
) -> list[dict[str, float]]:
    """Recurrent LIF/ALIF network in GeNN: fitness = relative squared deviation of the mean
    firing rate from ``target_rate_hz`` (minimise). Batched; compiled once per worker.

    Parameters: ``tau_m``, ``tau_a``, ``beta``, ``w_scale``, ``frac_adaptive``, ``drive``
    (see :data:`DEFAULT_PARAMS`). Options: ``n_neurons``, ``sim_ms`` (scored, after
    ``warmup_ms``), ``batch_size`` (GeNN batch compiled into the model; chunks are padded or
    split to it), ``backend`` (``auto``, ``cuda``, ``single_threaded_cpu``), ``precision``
    (``float`` or ``double``), ``build_dir`` (where generated code goes; default a per-process
    folder under the temp dir). Metrics: ``rate`` (Hz), ``rate_alif``, ``rate_lif``.
    """
    if len(params) != len(seeds):
        raise ValueError(f"{len(params)} parameter sets but {len(seeds)} seeds")
    if precision not in ("float", "double"):
        raise ValueError(f"precision must be 'float' or 'double', got {precision!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    chosen = resolve_backend(backend)
    _pygenn()  # a clear install hint before any work
    if not params:
        return []
    n = int(n_neurons)
    net = compiled_network(n, int(batch_size), chosen, dt, precision, build_dir)
    warm_steps = int(round(warmup_ms / dt))
    steps = int(round(sim_ms / dt))
    checked = [_checked(p) for p in params]
    out: list[dict[str, float]] = []
    for start in range(0, len(params), net.batch_size):
        chunk = list(range(start, min(start + net.batch_size, len(params))))
        slots = chunk + [chunk[0]] * (net.batch_size - len(chunk))  # pad with a copy
        arrays = [_individual_arrays(checked[i][0], seeds[i], n, dt) for i in slots]
        model = net.model
        if net.loaded:  # a fresh load resets time, state and spike queues
            model.unload()
        model.load()
        net.loaded = True
        for name in ("Alpha", "Rho"):  # one value per batch entry
            _put(net.neurons.vars[name], np.array([a[name] for a in arrays]))
        for name in ("Beta", "Ibias"):  # one row of n values per batch entry
            _put(net.neurons.vars[name], np.stack([a[name] for a in arrays]))
        _put(net.synapses.vars["g"], np.stack([a["g"] for a in arrays]))
        for _ in range(warm_steps):
            model.step_time()
        count_var = net.neurons.vars["SpikeCount"]
        _put(count_var, np.zeros((net.batch_size, n)))
        for _ in range(steps):
            model.step_time()
        count_var.pull_from_device()
        counts = np.asarray(count_var.view, dtype=np.float64).reshape(net.batch_size, n)
        for b, i in enumerate(chunk):
            p, ok = checked[i]
            rate = counts[b].sum() / (n * sim_ms / 1000.0)
            n_adaptive = round(p["frac_adaptive"] * n)
            alif_part = counts[b, :n_adaptive]
            lif_part = counts[b, n_adaptive:]
            fitness = ((rate - target_rate_hz) / target_rate_hz) ** 2
            out.append(
                {
                    "fitness": fitness if ok and math.isfinite(rate) else math.nan,
                    "rate": float(rate),
                    "rate_alif": float(alif_part.mean() / (sim_ms / 1000.0))
                    if alif_part.size
                    else math.nan,
                    "rate_lif": float(lif_part.mean() / (sim_ms / 1000.0))
                    if lif_part.size
                    else math.nan,
                }
            )
    return out
