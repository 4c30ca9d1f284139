"""GeNN (PyGeNN 5) adapter: one compiled model per worker and shape, individuals as state.

Why it is built this way. Generating and compiling a GeNN model takes seconds (``make`` of C++ or
CUDA code); one simulation of a small network takes milliseconds to a second. So a model is
built **once per worker process and shape** (populations, sizes, batch size, backend, time step,
precision) and kept; everything that differs between individuals (time constants, weights,
initial state, input spikes) is written into the model as *state* when it is loaded, never
compiled in. Before every run the model is unloaded and loaded again
(:meth:`GeNNModel.unload` / :meth:`GeNNModel.load`: no code generation, no compile): that
resets time, every variable, spike queues and recording buffers, so nothing of one run leaks
into the next.

The two backends:

- ``single_threaded_cpu`` supports only a batch size of 1 (GeNN refuses more at build time), so
  items (individuals, or individual x task pairs) run one after the other, each in its own
  fresh load of the same compiled model;
- ``cuda`` uses GeNN's batch mode: ``batch_size`` independent copies of the network in one
  kernel launch per time step, batch entry ``b`` being item ``b`` of the pass. Per-item values
  are ``READ_ONLY_DUPLICATE`` (one copy per entry) or ``READ_ONLY_SHARED_NEURON`` (one value per
  entry, shared by a population's neurons) variables; a pass with fewer items than the batch is
  padded with copies of its first item (discarded), more items take several passes.

Randomness never comes from GeNN's own generators (their streams depend on the batch slot and
the backend): every random value is drawn in NumPy from the item's seed, or, for noise drawn
while the model runs, from a per-neuron generator state that is itself such a value. So an
item's result does not depend on the pass it is in (bitwise on ``single_threaded_cpu``; CUDA may
differ from the CPU in the last bits of float arithmetic).

Where the generated code goes: GeNN writes ``<name>_CODE/`` and runs ``make`` in the folder it
is given. l2lflow gives it ``<cache>/<name>-<hash>``, where the hash covers everything that
changes the generated code (the model's Python source, the shape, backend, precision, the
PyGeNN version) and ``<cache>`` is the ``build_dir`` option, else ``$L2LFLOW_GENN_CACHE``, else
``<tmp>/l2lflow-genn-<uid>``: never the user's working directory. Concurrent workers on one node
share a folder safely: the build (generation and ``make``) holds an exclusive file lock, and a
later build of the same hash finds GeNN's model hash unchanged and skips the code generation
(``make`` then has nothing to do), so a worker started later loads the compiled library in
well under a second instead of compiling again.

PyGeNN is imported only when an evaluation runs. It has no PyPI wheel: install GeNN 5 from its
release source (see README, ``docs/gpu.md``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l2lflow.optimizees.base import EvaluationContext, checked_params, register_optimizee

INSTALL_HINT = (
    "GeNN optimizees need PyGeNN 5 (GeNN), which has no PyPI wheel: build it from the release "
    "source, e.g. `pip install https://github.com/genn-team/genn/archive/refs/tags/5.4.0.tar.gz` "
    "(needs g++, make, pkg-config, libffi-dev; set CUDA_PATH first for the CUDA backend), "
    "see docs/gpu.md"
)

BACKENDS = ("auto", "cuda", "single_threaded_cpu")

_log = logging.getLogger("l2lflow.genn")


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


def available_backend(backend: str, log: logging.Logger | None = None) -> str:
    """The backend to build for: :func:`resolve_backend`, checked against this PyGeNN build.

    PyGeNN builds the CUDA backend only when ``CUDA_PATH`` was set at install time. A worker
    given a GPU with ``backend: auto`` then runs on the CPU backend, with a warning; an explicit
    ``backend: cuda`` is refused with the reason.
    """
    chosen = resolve_backend(backend)
    _pygenn()
    from pygenn.genn_model import backend_modules

    built = list(backend_modules)
    if chosen in built:
        return chosen
    if backend == "auto" and "single_threaded_cpu" in built:
        (log or _log).warning(
            "this worker has a GPU but PyGeNN was built without the CUDA backend "
            "(set CUDA_PATH before installing it): running on single_threaded_cpu"
        )
        return "single_threaded_cpu"
    raise ValueError(
        f"backend {chosen!r} is not in this PyGeNN build (it has: {', '.join(built)}); "
        "install PyGeNN with CUDA_PATH set for the CUDA backend (docs/gpu.md)"
    )


def batch_size_for(backend: str, requested: int) -> int:
    """The batch compiled into a model: 1 on the CPU backend (its limit), else ``requested``."""
    if int(requested) < 1:
        raise ValueError(f"batch_size must be >= 1, got {requested!r}")
    return 1 if backend == "single_threaded_cpu" else int(requested)


def cache_root(build_dir: str | None = None) -> Path:
    """Where compiled models are kept: ``build_dir``, ``$L2LFLOW_GENN_CACHE`` or the temp dir."""
    root = build_dir or os.environ.get("L2LFLOW_GENN_CACHE")
    if not root:
        root = os.path.join(tempfile.gettempdir(), f"l2lflow-genn-{os.getuid()}")
    return Path(root)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (other processes wait for it)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to 2 meanwhile: ``make`` (run by GeNN) prints its progress to
    stdout, which belongs to the caller's results (a benchmark's last line, a CLI's output)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@dataclass
class CompiledModel:
    """A built GeNN model, kept for the life of the worker process, and its groups by name."""

    model: Any
    groups: dict[str, Any]
    batch_size: int
    backend: str
    folder: Path
    loaded: bool = False

    def start(
        self,
        variables: dict[tuple[str, str], np.ndarray],
        extra_global: dict[tuple[str, str], np.ndarray] | None = None,
        record_steps: int | None = None,
    ) -> None:
        """(Re)load the model with these initial values: time 0, nothing left of the last run.

        ``variables`` maps ``(group, variable)`` to values shaped as the model's view of that
        variable (see :func:`stack`); ``extra_global`` the same for extra global parameters.
        """
        if self.loaded:
            self.model.unload()
            self.loaded = False
        for (group, name), values in variables.items():
            self.groups[group].vars[name].set_init_values(values)
        for (group, name), values in (extra_global or {}).items():
            self.groups[group].extra_global_params[name].set_init_values(values)
        self.model.load(num_recording_timesteps=record_steps)
        self.loaded = True

    def put(self, group: str, name: str, values: np.ndarray) -> None:
        """Overwrite a variable of the loaded model (all batch entries) and push it."""
        variable = self.groups[group].vars[name]
        view = variable.view
        view[...] = np.asarray(values, dtype=view.dtype).reshape(view.shape)
        variable.push_to_device()

    def get(self, group: str, name: str) -> np.ndarray:
        """A copy of a variable of the loaded model, pulled from the device."""
        variable = self.groups[group].vars[name]
        variable.pull_from_device()
        return np.array(variable.view)

    def run(self, steps: int) -> None:
        """Advance the loaded model by ``steps`` time steps."""
        step = self.model.step_time
        for _ in range(int(steps)):
            step()

    def spikes(self, group: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """Recorded (times, neuron ids) per batch entry, after the recorded steps have run."""
        self.model.pull_recording_buffers_from_device()
        return [
            (np.asarray(t, dtype=np.float64), np.asarray(i, dtype=np.int64))
            for t, i in self.groups[group].spike_recording_data
        ]


#: (model name, shape, backend, batch, dt, precision) -> CompiledModel; one per key and process
_COMPILED: dict[tuple[Any, ...], CompiledModel] = {}
#: how many models this process generated and built (tests check each shape is built once)
BUILD_COUNT = 0


def compiled_model(
    name: str,
    shape: tuple[Any, ...],
    define: Callable[[Any], dict[str, Any]],
    *,
    backend: str,
    batch_size: int,
    dt: float,
    precision: str,
    build_dir: str | None = None,
) -> CompiledModel:
    """The model ``name`` of this shape, defined by ``define(model)`` and built on first use.

    ``define`` adds the populations to a fresh ``GeNNModel`` and returns them by name; the
    model's source (the module ``define`` lives in, and this one) is part of the cache key, so
    editing it never reuses stale generated code. ``build_dir`` matters for the first build of
    a shape in a process; later calls reuse that model.
    """
    global BUILD_COUNT
    if precision not in ("float", "double"):
        raise ValueError(f"precision must be 'float' or 'double', got {precision!r}")
    key = (name, tuple(shape), backend, int(batch_size), float(dt), precision)
    if key in _COMPILED:
        return _COMPILED[key]
    pygenn = _pygenn()
    # the model's code lives in the defining module and in this one (shared snippets)
    source = b"".join(
        Path(f).read_bytes()
        for f in sorted({__file__, sys.modules[define.__module__].__file__ or ""})
    )
    digest = hashlib.sha256(repr((key, pygenn.__version__)).encode() + source).hexdigest()[:16]
    folder = cache_root(build_dir) / f"{name}-{digest}"
    model = pygenn.GeNNModel(precision, name, backend=backend)
    model.dt = float(dt)
    model.batch_size = int(batch_size)
    groups = define(model)
    with _exclusive(folder.with_suffix(".lock")), _stdout_to_stderr():
        folder.mkdir(parents=True, exist_ok=True)
        model.build(path_to_model=str(folder))
    BUILD_COUNT += 1
    net = CompiledModel(model, groups, int(batch_size), backend, folder)
    _COMPILED[key] = net
    return net


def stack(values: list[Any], batch_size: int) -> np.ndarray:
    """Per-entry values as GeNN's view of a batched variable: the entry itself for a batch of
    1, else stacked on a leading batch axis. Scalars become shape ``(1,)``."""
    arrays = [np.atleast_1d(np.asarray(v)) for v in values]
    if batch_size == 1:
        (only,) = arrays
        return only
    return np.stack(arrays)


def passes(n_items: int, batch_size: int) -> list[tuple[list[int], list[int]]]:
    """Split ``n_items`` into passes of ``batch_size``: (items of the pass, batch slots).

    The slots list has exactly ``batch_size`` entries; a short last pass repeats its first
    item in the padding slots, whose results are discarded.
    """
    out = []
    for start in range(0, n_items, batch_size):
        chunk = list(range(start, min(start + batch_size, n_items)))
        out.append((chunk, chunk + [chunk[0]] * (batch_size - len(chunk))))
    return out


#: GeNN model snippets by name, kept alive for the whole process: PyGeNN's init objects hold a
#: bare pointer to their snippet, so a snippet only referenced there is freed (and crashes GeNN)
_SNIPPETS: dict[str, Any] = {}


def batched_static_pulse() -> Any:
    """A static-pulse weight update whose ``g`` has one copy per batch entry (the built-in
    ``StaticPulse`` shares ``g`` across the batch, which would give every individual the same
    weights)."""
    if "batched_static_pulse" not in _SNIPPETS:
        from pygenn import VarAccess, create_weight_update_model

        _SNIPPETS["batched_static_pulse"] = create_weight_update_model(
            "l2lflow_batched_static_pulse",
            vars=[("g", "scalar", VarAccess.READ_ONLY_DUPLICATE)],
            pre_spike_syn_code="addToPost(g);",
        )
    return _SNIPPETS["batched_static_pulse"]


# ------------------------------------------------------------------------------ genn.alif_rate
# A building block rather than a learning-to-learn optimizee: the smallest GeNN network that
# exercises the adapter (per-individual shared and duplicated variables, batched weights).

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

_ALIF_STATE = ("Alpha", "Rho", "Beta", "Ibias")


def _define_alif(n_neurons: int) -> Callable[[Any], dict[str, Any]]:
    def define(model: Any) -> dict[str, Any]:
        from pygenn import VarAccess, create_neuron_model, init_postsynaptic, init_weight_update

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
        batch = model.batch_size
        # arrays, not constants: initialised from the host at every load, never on the device
        per_entry = stack([np.zeros(1)] * batch, batch)
        per_neuron = stack([np.zeros(n_neurons)] * batch, batch)
        initial = {
            "V": 0.0,
            "A": 0.0,
            "SpikeCount": 0,
            "Alpha": per_entry,
            "Rho": per_entry,
            "Beta": per_neuron,
            "Ibias": per_neuron,
        }
        neurons = model.add_neuron_population("alif", n_neurons, alif, {}, initial)
        synapses = model.add_synapse_population(
            "recurrent",
            "DENSE",
            neurons,
            neurons,
            init_weight_update(
                batched_static_pulse(),
                {},
                {"g": stack([np.zeros(n_neurons * n_neurons)] * batch, batch)},
            ),
            init_postsynaptic("DeltaCurr"),
        )
        return {"alif": neurons, "recurrent": synapses}

    return define


def _alif_arrays(p: dict[str, float], seed: int, n: int, dt: float) -> dict[str, Any]:
    """An individual's variable values, from its parameters and its seed only (float64)."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7,)))
    w = rng.standard_normal((n, n)) * (p["w_scale"] / math.sqrt(n))
    np.fill_diagonal(w, 0.0)
    n_adaptive = round(p["frac_adaptive"] * n)
    return {
        "Alpha": math.exp(-dt / p["tau_m"]),
        "Rho": math.exp(-dt / p["tau_a"]),
        "Beta": np.where(np.arange(n) < n_adaptive, p["beta"], 0.0),
        "Ibias": p["drive"] * (1.0 + 0.1 * rng.standard_normal(n)),
        "g": w.reshape(-1),  # row-major pre x post, the order of a DENSE matrix
    }


def _alif_valid(p: dict[str, float]) -> bool:
    """Whether finite parameters describe a network that can be simulated."""
    return (
        p["tau_m"] > 0
        and p["tau_a"] > 0
        and p["beta"] >= 0
        and p["w_scale"] >= 0
        and 0.0 <= p["frac_adaptive"] <= 1.0
    )


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
    """A GeNN building block: a recurrent LIF/ALIF network tuned to a target firing rate;
    fitness = relative squared deviation of the mean rate from ``target_rate_hz`` (minimise).

    Not learning to learn (see ``genn.reservoir`` for that): the smallest network that shows
    how a GeNN optimizee keeps one compiled model and writes each individual in as state.
    Parameters: ``tau_m``, ``tau_a``, ``beta``, ``w_scale``, ``frac_adaptive``, ``drive``
    (see :data:`DEFAULT_PARAMS`). Options: ``n_neurons``, ``sim_ms`` (scored, after
    ``warmup_ms``), ``batch_size`` (GeNN batch on CUDA; the CPU backend runs one individual at
    a time), ``backend`` (``auto``, ``cuda``, ``single_threaded_cpu``), ``precision``
    (``float`` or ``double``), ``build_dir`` (the compiled-model cache). Metrics: ``rate``
    (Hz), ``rate_alif``, ``rate_lif``.
    """
    if len(params) != len(seeds):
        raise ValueError(f"{len(params)} parameter sets but {len(seeds)} seeds")
    log = contexts[0].log if contexts else None
    chosen = available_backend(backend, log)  # a clear install hint before any work
    batch = batch_size_for(chosen, batch_size)
    if not params:
        return []
    n = int(n_neurons)
    net = compiled_model(
        f"l2lflow_alif_n{n}",
        (n,),
        _define_alif(n),
        backend=chosen,
        batch_size=batch,
        dt=dt,
        precision=precision,
        build_dir=build_dir,
    )
    warm_steps = int(round(warmup_ms / dt))
    steps = int(round(sim_ms / dt))
    checked = [checked_params(p, DEFAULT_PARAMS, "genn.alif_rate", _alif_valid) for p in params]
    out: list[dict[str, float]] = []
    for chunk, slots in passes(len(params), batch):
        arrays = [_alif_arrays(checked[i][0], seeds[i], n, dt) for i in slots]
        state = {("alif", k): stack([a[k] for a in arrays], batch) for k in _ALIF_STATE}
        state[("recurrent", "g")] = stack([a["g"] for a in arrays], batch)
        net.start(state)
        net.run(warm_steps)
        net.put("alif", "SpikeCount", np.zeros((batch, n)))
        net.run(steps)
        counts = net.get("alif", "SpikeCount").astype(np.float64).reshape(batch, n)
        for b, i in enumerate(chunk):
            p, ok = checked[i]
            rate = counts[b].sum() / (n * sim_ms / 1000.0)
            n_adaptive = round(p["frac_adaptive"] * n)
            parts = {"rate_alif": counts[b, :n_adaptive], "rate_lif": counts[b, n_adaptive:]}
            fitness = ((rate - target_rate_hz) / target_rate_hz) ** 2
            out.append(
                {
                    "fitness": float(fitness) if ok and math.isfinite(rate) else math.nan,
                    "rate": float(rate),
                    **{
                        k: float(v.mean() / (sim_ms / 1000.0)) if v.size else math.nan
                        for k, v in parts.items()
                    },
                }
            )
    return out
