"""The Brunel (2000) balanced random network as an optimizee: tune it into a target regime.

The network is model A of Brunel (2000): ``NE = 4 NI`` ``iaf_psc_delta`` neurons, every neuron
receives ``CE = epsilon NE`` excitatory and ``CI = epsilon NI`` inhibitory inputs (fixed
in-degree) of strength ``J`` and ``-g J``, and an external Poisson drive at ``eta`` times the
rate that would bring the mean input to threshold. Depending on ``g`` and ``eta`` it sits in a
synchronous-regular, asynchronous-irregular or synchronous-irregular state, which makes it a
small, honest test problem for an outer-loop optimizer: the fitness is the weighted distance of
the measured (rate, CV of ISIs, synchrony) from a target regime and is to be **minimised**.

Defaults are for a *small* network (500 neurons, 1 s, ~0.2-0.5 s per evaluation). With only
``CE = 40`` inputs the paper's ``J = 0.1 mV`` leaves the recurrence negligible next to the
external drive, so the default ``J`` is 1 mV, which keeps the regimes distinguishable.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from l2lflow.optimizees.base import EvaluationContext, register_optimizee
from l2lflow.optimizees.nest.kernel import get_nest, nest_session, simulate

#: hyperparameters and their defaults (mV, ms); a missing one takes its default
DEFAULT_PARAMS: dict[str, float] = {
    "g": 5.0,  # relative strength of inhibition
    "eta": 2.0,  # external rate relative to the threshold rate
    "J": 1.0,  # excitatory PSP amplitude (mV)
    "delay": 1.5,  # synaptic delay (ms)
    "epsilon": 0.1,  # connection probability (in-degree / population size)
}

#: a search space over the hyperparameters (same layout as the reservoir's)
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "g": {"low": 2.0, "high": 8.0, "scale": "linear", "type": "float"},
    "eta": {"low": 0.5, "high": 4.0, "scale": "linear", "type": "float"},
    "J": {"low": 0.1, "high": 2.0, "scale": "log", "type": "float"},
    "delay": {"low": 0.5, "high": 3.0, "scale": "linear", "type": "float"},
}

#: the asynchronous-irregular regime: moderate rate, Poisson-like ISIs, no population synchrony
DEFAULT_TARGET: dict[str, float] = {"rate": 10.0, "cv_isi": 1.0, "synchrony": 1.0}
DEFAULT_WEIGHTS: dict[str, float] = {"rate": 1.0, "cv_isi": 1.0, "synchrony": 1.0}

_NEURON = {
    "C_m": 1.0,  # so that a weight in pA is a PSP jump in mV
    "tau_m": 20.0,
    "t_ref": 2.0,
    "E_L": 0.0,
    "V_reset": 10.0,
    "V_m": 0.0,
    "V_th": 20.0,
}


def _checked(given: dict[str, Any] | None, defaults: dict[str, float], what: str) -> dict:
    """Defaults overlaid with ``given``; an unknown key is a typo and must not pass silently."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(defaults)}")
    return {**defaults, **{k: float(v) for k, v in given.items()}}


def spike_statistics(
    times: np.ndarray,
    senders: np.ndarray,
    n_neurons: int,
    t_start: float,
    t_stop: float,
    bin_ms: float,
) -> dict[str, float]:
    """Rate (Hz), mean CV of ISIs and synchrony of spikes in ``[t_start, t_stop)``.

    Synchrony is the Fano factor (variance / mean) of the population spike count in ``bin_ms``
    bins: ~1 for independent Poisson neurons, growing with population-wide co-fluctuations. It is
    cheap and needs no membrane-potential recording (unlike Golomb's chi). The CV is averaged over
    neurons with at least two ISIs; it (and the synchrony of a silent network) is NaN when
    undefined.
    """
    keep = (times >= t_start) & (times < t_stop)
    times, senders = times[keep], senders[keep]
    duration_s = (t_stop - t_start) / 1000.0
    rate = len(times) / n_neurons / duration_s

    order = np.lexsort((times, senders))
    times, senders = times[order], senders[order]
    isi = np.diff(times)
    same = senders[1:] == senders[:-1]
    isi, owner = isi[same], senders[1:][same]
    cv = math.nan
    if len(isi):
        _, idx = np.unique(owner, return_inverse=True)
        n = np.bincount(idx).astype(float)
        s1 = np.bincount(idx, isi)
        s2 = np.bincount(idx, isi * isi)
        ok = n >= 2
        if ok.any():
            mean = s1[ok] / n[ok]
            var = np.maximum(s2[ok] / n[ok] - mean**2, 0.0)
            cv = float(np.mean(np.sqrt(var) / mean))

    edges = np.arange(t_start, t_stop + 1e-9, bin_ms)
    counts, _ = np.histogram(times, bins=edges)
    mean_count = counts.mean() if len(counts) else 0.0
    synchrony = float(counts.var() / mean_count) if mean_count > 0 else math.nan
    return {"rate": float(rate), "cv_isi": cv, "synchrony": synchrony}


def regime_distances(
    stats: dict[str, float], target: dict[str, float], nan_distance: float
) -> dict[str, float]:
    """Distance of each measure from its target.

    Rate and synchrony are positive and span orders of magnitude, so they are compared on a log
    scale (``|log((x + e) / (target + e))|``, with ``e`` = 0.1 Hz for the rate so that a silent
    network has a finite distance); the CV is compared linearly. An undefined measure (a silent
    network has no ISIs) counts ``nan_distance``.
    """
    out = {}
    for name, value in stats.items():
        goal = target[name]
        if not math.isfinite(value):
            out[name] = nan_distance
        elif name == "cv_isi":
            out[name] = abs(value - goal)
        else:
            eps = 0.1 if name == "rate" else 1e-3
            out[name] = abs(math.log((value + eps) / (goal + eps)))
    return out


@register_optimizee("nest.brunel", array_dims={"rate_trace": ("time_bin",)}, warm_up=get_nest)
def brunel(
    params: dict[str, Any],
    seed: int,
    *,
    context: EvaluationContext | None = None,
    n_neurons: int = 500,
    sim_time_ms: float = 1000.0,
    warmup_ms: float = 100.0,
    bin_ms: float = 2.0,
    target: dict[str, float] | None = None,
    weights: dict[str, float] | None = None,
    nan_distance: float = 5.0,
    record_rate_trace: bool = False,
    resolution: float = 0.1,
) -> dict[str, Any]:
    """Brunel (2000) balanced network; fitness = weighted distance to a target regime (minimise).

    Parameters (``params``): ``g``, ``eta``, ``J`` (mV), ``delay`` (ms), ``epsilon``; see
    :data:`DEFAULT_PARAMS`. Invalid values are not pre-checked: NEST's own error (e.g. ``BadDelay``
    for a negative delay) propagates with its message.

    Returns ``fitness``, the measures ``rate`` (Hz), ``cv_isi``, ``synchrony`` (Fano factor of the
    population count, see :func:`spike_statistics`), their distances ``d_rate``, ``d_cv_isi``,
    ``d_synchrony``, and with ``record_rate_trace`` the population rate (Hz per neuron) in
    ``bin_ms`` bins over the whole run (warm-up included) as ``rate_trace``.
    """
    ctx = context or EvaluationContext(generation=0, individual=0, seed=seed)
    p = _checked(params, DEFAULT_PARAMS, "parameter(s) for nest.brunel")
    goal = _checked(target, DEFAULT_TARGET, "target measure(s)")
    weight = _checked(weights, DEFAULT_WEIGHTS, "weight(s)")
    if not 0.0 <= warmup_ms < sim_time_ms:
        raise ValueError(f"warmup_ms must be in [0, sim_time_ms), got {warmup_ms}")

    n_exc = int(round(0.8 * n_neurons))
    n_inh = int(n_neurons) - n_exc
    c_exc = int(round(p["epsilon"] * n_exc))
    c_inh = int(round(p["epsilon"] * n_inh))
    j_exc, j_inh = p["J"], -p["g"] * p["J"]
    drive = p["J"] * c_exc * _NEURON["tau_m"]  # mV per (spike/ms) of each external input
    if drive == 0.0:
        raise ValueError("J * epsilon * NE must be non-zero (it sets the threshold rate)")
    nu_threshold = _NEURON["V_th"] / drive  # spikes/ms per input that reach threshold
    external_rate = 1000.0 * p["eta"] * nu_threshold * c_exc  # Hz, all CE inputs pooled

    with nest_session(seed, ctx.threads, resolution, log=ctx.log) as nest:
        neurons = nest.Create("iaf_psc_delta", n_exc + n_inh, params=_NEURON)
        exc, inh = neurons[:n_exc], neurons[n_exc:]
        noise = nest.Create("poisson_generator", params={"rate": external_rate})
        recorder = nest.Create("spike_recorder")
        nest.Connect(noise, neurons, syn_spec={"weight": j_exc, "delay": p["delay"]})
        nest.Connect(
            exc,
            neurons,
            {"rule": "fixed_indegree", "indegree": c_exc},
            {"weight": j_exc, "delay": p["delay"]},
        )
        nest.Connect(
            inh,
            neurons,
            {"rule": "fixed_indegree", "indegree": c_inh},
            {"weight": j_inh, "delay": p["delay"]},
        )
        nest.Connect(neurons, recorder)
        simulate(sim_time_ms)
        events = recorder.get("events")
        times = np.asarray(events["times"], dtype=float)
        senders = np.asarray(events["senders"], dtype=np.int64)

    stats = spike_statistics(times, senders, n_exc + n_inh, warmup_ms, sim_time_ms, bin_ms)
    dist = regime_distances(stats, goal, nan_distance)
    result: dict[str, Any] = {
        "fitness": float(sum(weight[k] * dist[k] for k in dist)),
        **stats,
        **{f"d_{k}": v for k, v in dist.items()},
    }
    if record_rate_trace:
        edges = np.arange(0.0, sim_time_ms + 1e-9, bin_ms)
        counts, _ = np.histogram(times, bins=edges)
        result["rate_trace"] = counts / (n_exc + n_inh) / (bin_ms / 1000.0)
    return result
