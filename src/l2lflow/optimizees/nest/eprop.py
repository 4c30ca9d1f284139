"""Learning to learn with e-prop in NEST: evolve the hyperparameters that make e-prop learn fast.

The inner loop is *e-prop* (eligibility propagation, Bellec et al., Nature Communications 2020),
the local, online approximation of backpropagation through time, as NEST 3.10 implements it
(``eprop_iaf_adapt`` recurrent neurons, ``eprop_readout``, ``eprop_synapse``,
``eprop_learning_signal_connection``; Korcsak-Gorzo et al. 2025). For each task drawn from a
task family, a recurrent network of LIF and adaptive (ALIF) neurons is built from the
individual's hyperparameters and trained for ``inner_steps`` iterations (one iteration = one
training trial); then learning is switched off and the network is scored on held-out trials of
the same task. Fitness = held-out error after learning, averaged over ``n_tasks`` tasks, to be
**minimised**. The outer loop thus tunes what makes *learning* work: the learning rate,
membrane and adaptation time constants, adaptation strength, firing-rate regularisation,
initial weight scale and the fraction of adaptive neurons.

Task families (simulator-independent, in :mod:`l2lflow.tasks`):

* ``sine`` (default) and ``maml``: sine-wave regression (:mod:`l2lflow.tasks.sine`), the very
  family and encoding ``torch.lsnn`` uses: with ``task_family: sine`` both optimizees learn the
  same tasks for the same task seed (e-prop here, BPTT there). The training sequence is shown
  once per iteration; the held-out sequence holds other x values of the same sine. Error = MSE.
* ``evidence``: evidence accumulation (:mod:`l2lflow.tasks.evidence`), a two-way classification
  with a delay; each iteration is a new training trial. Error = 1 - held-out accuracy (the
  readout with the larger mean in the recall window is the answer).

The parameters mean what they mean in ``torch.lsnn`` (threshold 1, membrane ``v = alpha v +
(1 - alpha) I``, threshold ``1 + beta a`` with ``a`` the low-pass filtered own spikes, weights
``w_scale / sqrt(n)``), so one experiment config serves both. NEST's neurons integrate without
the ``1 - alpha`` factor, so the input and recurrent weights are scaled by it here.

Randomness has two owners, as in ``nest.reservoir``: the tasks, their input spikes and targets
come from ``context.task_seed`` only (every individual of a generation sees the same trials; the
meta-test phase passes a held-out seed); the initial weights and NEST's own streams come from
the evaluation seed (one stream per task). NEST is imported when the first evaluation runs, never
when this module is imported.

Sizes: the defaults (30 recurrent neurons, 20 inputs, 200 ms trials, 20 iterations, 2 tasks)
evaluate in about a second on one core; raise ``n_neurons``, ``inner_steps``, ``n_tasks`` and
``n_steps`` for runs on JUWELS (NEST's sine-wave example, 100 + 100 neurons, 200 iterations of
1 s, takes ~67 s on one thread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from l2lflow.optimizees.base import EvaluationContext, checked_params, register_optimizee
from l2lflow.optimizees.nest.kernel import get_nest, nest_session, simulate
from l2lflow.optimizees.torch_lsnn import _valid as _lsnn_valid
from l2lflow.tasks import evidence, sine

#: hyperparameters and their defaults (ms for time constants); a missing one takes its default
DEFAULT_PARAMS: dict[str, float] = {
    "tau_m": 20.0,  # membrane time constant of the recurrent neurons (ms)
    "tau_a": 200.0,  # adaptation time constant of ALIF neurons (ms)
    "beta": 1.0,  # adaptation strength: threshold = 1 + beta * a
    "inner_lr": 0.01,  # e-prop learning rate (per iteration, see `_eta`)
    "w_scale": 1.0,  # scale of the initial input and recurrent weights
    "frac_adaptive": 0.4,  # fraction of ALIF neurons (the others are LIF)
    "c_reg": 1.0,  # firing-rate regularisation strength (target f_target)
}

#: recommended search space of the outer loop
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "tau_m": {"low": 5.0, "high": 100.0, "scale": "log", "type": "float"},
    "tau_a": {"low": 20.0, "high": 2000.0, "scale": "log", "type": "float"},
    "beta": {"low": 0.0, "high": 3.0, "scale": "linear", "type": "float"},
    "inner_lr": {"low": 1e-4, "high": 0.3, "scale": "log", "type": "float"},
    "w_scale": {"low": 0.1, "high": 10.0, "scale": "log", "type": "float"},
    "frac_adaptive": {"low": 0.0, "high": 1.0, "scale": "linear", "type": "float"},
    "c_reg": {"low": 1e-3, "high": 30.0, "scale": "log", "type": "float"},
}

FAMILIES = ("sine", "maml", "evidence")
_DELAY = 1.0  # ms: every connection, one step at the 1 ms resolution
_OFFSET_GEN = 1.0  # ms: generator signals start one step in (as in NEST's e-prop examples)
_TOTAL_OFFSET = _OFFSET_GEN + _DELAY  # the target generators' time of a trial's step 0
#: the readout's recorded time of a trial's step 0 (its rate inputs arrive one step later)
_READOUT_OFFSET = _TOTAL_OFFSET + 1.0
_GAP_STEPS = 20  # quiet steps between training and test: pending updates land, eta goes to 0


@dataclass(frozen=True)
class Trials:
    """A task as a simulator sees it: trials on a 1 ms grid (see :mod:`l2lflow.tasks`).

    ``train_*`` are shown one per iteration (cyclically when fewer than the iterations),
    ``test_*`` after learning. Spikes ``[trials, steps, inputs]`` (bool), targets ``[trials,
    steps, outputs]``, ``mask [steps]`` the scored steps, ``test_labels`` for classification.
    """

    train_spikes: np.ndarray
    train_targets: np.ndarray
    test_spikes: np.ndarray
    test_targets: np.ndarray
    mask: np.ndarray
    test_labels: np.ndarray | None = None

    @property
    def n_steps(self) -> int:
        return int(self.mask.shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.train_targets.shape[2])


def _rng(entropy: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(entropy), spawn_key=key))


def draw_trials(
    family: str,
    task_seed: int,
    n_tasks: int,
    *,
    n_inputs: int,
    n_steps: int,
    n_points: int,
    inner_steps: int,
    n_test_trials: int,
    max_rate_hz: float,
) -> list[Trials]:
    """The tasks of a task seed, encoded: a pure function of its arguments (no evaluation seed)."""
    if family in ("sine", "maml"):
        tasks = sine.draw_tasks(
            task_seed,
            n_tasks,
            n_points=n_points,
            vary_frequency=sine.family_varies_frequency(family),
        )
        _, scored = sine.point_schedule(n_steps, n_points)
        out = []
        for t, task in enumerate(tasks):
            spikes, targets = sine.encode_task(
                task,
                task_seed,
                t,
                n_inputs=n_inputs,
                n_steps=n_steps,
                n_points=n_points,
                dt=1.0,
                max_rate_hz=max_rate_hz,
            )
            out.append(
                Trials(
                    spikes[0:1].astype(bool),
                    targets[0:1, :, None],
                    spikes[1:2].astype(bool),
                    targets[1:2, :, None],
                    scored,
                )
            )
        return out
    if family == "evidence":
        timing = evidence.EvidenceTiming()
        out = []
        for t, task in enumerate(evidence.draw_tasks(task_seed, n_tasks, n_inputs=n_inputs)):
            kw = {"n_inputs": n_inputs, "timing": timing}
            train = evidence.encode_trials(task, task_seed, t, 0, inner_steps, **kw)
            test = evidence.encode_trials(task, task_seed, t, 1, n_test_trials, **kw)
            out.append(Trials(train[0], train[1], test[0], test[1], timing.recall_mask(), test[2]))
        return out
    raise ValueError(f"task_family must be one of {list(FAMILIES)}, got {family!r}")


def _valid(p: dict[str, float]) -> bool:
    """Whether finite parameters describe a network that can be simulated: torch.lsnn's rule
    (the same hyperparameters) plus a non-negative firing-rate regularisation."""
    return _lsnn_valid(p) and p["c_reg"] >= 0


def _eta(inner_lr: float, trials: Trials) -> float:
    """NEST's learning rate for ``inner_lr``.

    NEST sums the gradient over every time step of a trial; ``torch.lsnn`` takes the gradient of
    the *mean* squared error over the scored steps. Dividing by the scored steps makes one
    e-prop iteration with ``inner_lr`` a gradient step of the same size as an SGD step of BPTT.
    """
    return float(inner_lr) / float(trials.mask.sum() * trials.n_outputs)


def run_task(
    trials: Trials,
    p: dict[str, float],
    seed: int,
    context: EvaluationContext,
    *,
    n_neurons: int,
    inner_steps: int,
    input_gain: float,
    tau_out: float,
    f_target: float,
    surrogate_height: float,
) -> dict[str, Any]:
    """The inner loop on one task: build, train ``inner_steps`` iterations, freeze, test.

    Returns the per-iteration training loss (``curve``), the held-out error and the firing rate.
    Everything runs in one NEST simulation: training trials back to back, a quiet gap in which
    the last updates land and the learning rate is set to 0, then the held-out trials.
    """
    rng = _rng(seed, 0)
    n_in = trials.train_spikes.shape[2]
    n_out = trials.n_outputs
    s = trials.n_steps
    n = int(n_neurons)
    alpha = math.exp(-1.0 / p["tau_m"])
    rho = math.exp(-1.0 / p["tau_a"])
    n_adaptive = int(round(p["frac_adaptive"] * n))
    w_in = rng.standard_normal((n, n_in)) * (p["w_scale"] * input_gain / math.sqrt(n_in))
    w_rec = rng.standard_normal((n, n)) * (p["w_scale"] / math.sqrt(n))
    np.fill_diagonal(w_rec, 0.0)
    w_out = rng.standard_normal((n_out, n)) / n
    # NEST integrates v = alpha v + W z: the (1 - alpha) of v = alpha v + (1 - alpha) I goes
    # into the weights
    w_in *= 1.0 - alpha
    w_rec *= 1.0 - alpha

    n_train = int(inner_steps)
    n_test = trials.test_spikes.shape[0]
    train_order = np.arange(n_train) % trials.train_spikes.shape[0]
    spikes = np.concatenate([trials.train_spikes[train_order], trials.test_spikes])
    targets = np.concatenate([trials.train_targets[train_order], trials.test_targets])
    # trial k starts at step start[k]; the test trials come after a quiet gap
    start = np.arange(n_train + n_test) * s
    start[n_train:] += _GAP_STEPS
    total_steps = int(start[-1] + s)

    neuron = {
        "C_m": 1.0,
        "E_L": 0.0,
        "V_m": 0.0,
        "V_th": 1.0,
        "I_e": 0.0,
        "t_ref": 0.0,
        "tau_m": p["tau_m"],
        "adapt_tau": p["tau_a"],
        # NEST: threshold = V_th + adapt_beta * a with a = rho a + z; torch.lsnn's a is
        # filtered with (1 - rho), so the same beta means adapt_beta = beta (1 - rho)
        "adapt_beta": 0.0,
        "c_reg": p["c_reg"] / s,
        "f_target": float(f_target),
        "kappa": alpha,
        "kappa_reg": alpha,
        "surrogate_gradient_function": "piecewise_linear",
        "surrogate_gradient_height": float(surrogate_height),
        "surrogate_gradient_width": 1.0,
        "eprop_isi_trace_cutoff": 100.0,
    }
    with nest_session(seed, context.threads, 1.0, log=context.log) as nest:
        nest.SetDefaults(
            "eprop_synapse",
            {
                "optimizer": {
                    "type": "gradient_descent",
                    "batch_size": 1,
                    "eta": _eta(p["inner_lr"], trials),
                    "optimize_each_step": False,
                    "Wmin": -100.0,
                    "Wmax": 100.0,
                }
            },
        )
        generators = nest.Create("spike_generator", n_in)
        inputs = nest.Create("parrot_neuron", n_in)
        rec = nest.Create("eprop_iaf_adapt", n, neuron)
        if n_adaptive:
            rec[:n_adaptive].set(adapt_beta=p["beta"] * (1.0 - rho))
        out = nest.Create(
            "eprop_readout",
            n_out,
            {"C_m": 1.0, "E_L": 0.0, "V_m": 0.0, "I_e": 0.0, "tau_m": float(tau_out)},
        )
        target_gen = nest.Create("step_rate_generator", n_out)
        window_gen = nest.Create("step_rate_generator")

        times = np.arange(s, dtype=float)
        channel_times = [[] for _ in range(n_in)]
        for k in range(len(start)):
            steps, chans = np.nonzero(spikes[k])
            for c in range(n_in):
                channel_times[c].append(times[steps[chans == c]] + start[k] + _OFFSET_GEN)
        generators.set([{"spike_times": np.concatenate(c)} for c in channel_times])
        # targets, and the learning window: on at the scored steps of the training trials only
        all_steps = (start[:, None] + np.arange(s)[None, :]).reshape(-1).astype(float)
        flat_targets = targets.reshape(-1, n_out)
        target_gen.set(
            [
                {
                    "amplitude_times": all_steps + _TOTAL_OFFSET,
                    "amplitude_values": flat_targets[:, o],
                }
                for o in range(n_out)
            ]
        )
        window = np.zeros((len(start), s))
        window[:n_train] = trials.mask
        window_gen.set(
            amplitude_times=all_steps + _TOTAL_OFFSET, amplitude_values=window.reshape(-1)
        )

        static = {"synapse_model": "static_synapse", "delay": _DELAY}
        eprop = {"synapse_model": "eprop_synapse", "delay": _DELAY}
        nest.Connect(generators, inputs, "one_to_one", static)
        nest.Connect(inputs, rec, "all_to_all", {**eprop, "weight": w_in})
        nest.Connect(
            rec, rec, {"rule": "all_to_all", "allow_autapses": False}, {**eprop, "weight": w_rec}
        )
        nest.Connect(rec, out, "all_to_all", {**eprop, "weight": w_out})
        # symmetric e-prop: the learning signal reaches neuron j through the initial readout
        # weights (NEST's feedback weights do not follow the readout's learning)
        nest.Connect(
            out,
            rec,
            "all_to_all",
            {
                "synapse_model": "eprop_learning_signal_connection",
                "delay": _DELAY,
                "weight": w_out.T,
            },
        )
        rate = {"synapse_model": "rate_connection_delayed", "delay": _DELAY}
        nest.Connect(target_gen, out, "one_to_one", {**rate, "receptor_type": 2})
        nest.Connect(window_gen, out, "all_to_all", {**rate, "receptor_type": 1})
        # one spike of every input and recurrent neuron right after training: e-prop applies a
        # synapse's update when its next spike passes, so this lands the last iteration's
        flush = nest.Create(
            "spike_generator", params={"spike_times": [start[n_train - 1] + s + _TOTAL_OFFSET]}
        )
        nest.Connect(flush, inputs, "all_to_all", {"weight": 1.0, "delay": _DELAY})
        # just above the highest threshold an ALIF neuron can reach (1 + beta): a larger kick
        # would leave the membrane far above threshold (reset subtracts only 1) and the neuron
        # firing into the held-out trials
        kick = {"weight": 2.0 + p["beta"], "delay": _DELAY}
        nest.Connect(flush, rec, "all_to_all", kick)
        meter = nest.Create(
            "multimeter",
            {
                "record_from": ["V_m", "readout_signal", "target_signal"],
                "interval": 1.0,
                "start": _TOTAL_OFFSET - 1.0,
            },
        )
        nest.Connect(meter, out)
        recorder = nest.Create("spike_recorder")
        nest.Connect(rec, recorder)

        switch = float(start[n_train - 1] + s + _GAP_STEPS // 2)
        simulate(switch, log=context.log)
        nest.SetDefaults("eprop_synapse", {"optimizer": {"eta": 0.0}})
        simulate(total_steps + _TOTAL_OFFSET + 2.0 - switch, log=context.log)
        events = meter.get("events")
        spike_times = np.asarray(recorder.get("events")["times"], dtype=float)
        first_out = int(out[0].global_id)

    # the readout is V_m (E_L = 0); NEST's readout_signal is zero outside the learning window
    readout = _by_sender(events, "V_m", first_out, n_out, _READOUT_OFFSET, total_steps)
    recorded_target = _by_sender(
        events, "target_signal", first_out, n_out, _READOUT_OFFSET, total_steps
    )
    trial_steps = (start[:, None] + np.arange(s)[None, :]).astype(int)  # [trials, steps]
    y = readout[trial_steps]  # [trials, steps, outputs]
    # NEST records the target only where the learning window is on: training, scored steps
    seen = recorded_target[trial_steps[:n_train]][:, trials.mask]
    if not np.allclose(seen, targets[:n_train][:, trials.mask], atol=1e-5):
        raise RuntimeError("e-prop readout and targets are misaligned in time (NEST changed?)")
    err = ((y - targets) ** 2)[:, trials.mask].mean(axis=(1, 2))  # per trial, scored steps
    curve = err[:n_train]
    if trials.test_labels is None:
        test_error = float(err[n_train:].mean())
        accuracy = math.nan
    else:
        answer = y[n_train:][:, trials.mask].mean(axis=1).argmax(axis=1)
        accuracy = float(np.mean(answer == trials.test_labels))
        test_error = 1.0 - accuracy
    return {
        "error": test_error,
        "test_mse": float(err[n_train:].mean()),
        "accuracy": accuracy,
        "curve": curve,
        "rate": _rate(spike_times, start[n_train:], s, n),
        "train_rate": _rate(spike_times, start[:n_train], s, n),
    }


def _rate(spike_times: np.ndarray, starts: np.ndarray, n_steps: int, n_neurons: int) -> float:
    """Mean firing rate (Hz) of the recurrent neurons during the trials starting at ``starts``
    (their input spikes reach the recurrent neurons ``_TOTAL_OFFSET`` later)."""
    t = spike_times - _TOTAL_OFFSET
    inside = sum(int(np.count_nonzero((t >= b) & (t < b + n_steps))) for b in starts)
    return inside / n_neurons / (len(starts) * n_steps / 1000.0)


def _by_sender(
    events: dict[str, Any], key: str, first: int, n: int, t0: float, n_steps: int
) -> np.ndarray:
    """A multimeter's ``key`` as ``[steps, senders]``, step 0 at time ``t0``."""
    values = np.full((n_steps, n), np.nan)
    times = np.asarray(events["times"], dtype=float)
    senders = np.asarray(events["senders"], dtype=np.int64) - first
    step = np.round(times - t0).astype(np.int64)
    ok = (step >= 0) & (step < n_steps)
    values[step[ok], senders[ok]] = np.asarray(events[key], dtype=float)[ok]
    return values


@register_optimizee(
    "nest.eprop",
    meta_test=True,
    array_dims={"task_error": ("task",), "learning_curve": ("task", "iteration")},
    warm_up=get_nest,
)
def eprop(
    params: dict[str, Any],
    seed: int,
    *,
    context: EvaluationContext | None = None,
    task_family: str = "sine",
    n_tasks: int = 2,
    n_neurons: int = 30,
    n_inputs: int = 20,
    n_steps: int = 200,
    n_points: int = 10,
    inner_steps: int = 20,
    n_test_trials: int = 8,
    input_gain: float = 10.0,
    tau_out: float = 5.0,
    max_rate_hz: float = 1000.0,
    f_target: float = 10.0,
    surrogate_height: float = 0.3,
    max_mse: float = 1e6,
) -> dict[str, Any]:
    """An LSNN learns new tasks with e-prop in NEST; fitness = held-out error after learning,
    averaged over ``n_tasks`` tasks from ``context.task_seed`` (minimise).

    Parameters: ``tau_m``, ``tau_a``, ``beta``, ``inner_lr``, ``w_scale``, ``frac_adaptive``,
    ``c_reg`` (see :data:`DEFAULT_PARAMS`). Options: ``task_family`` (``"sine"``, ``"maml"``:
    sine regression shared with ``torch.lsnn``; ``"evidence"``: evidence accumulation), network
    size (``n_neurons`` recurrent, ``n_inputs``), sine sequences (``n_steps`` of 1 ms showing
    ``n_points`` x values; evidence trials have their own length), ``inner_steps`` iterations,
    ``n_test_trials`` held-out trials (evidence; sine has one held-out sequence), input encoding
    (``input_gain``, ``max_rate_hz``), readout time constant ``tau_out``, the regularisation's
    ``f_target`` (Hz) and the pseudo-derivative's ``surrogate_height``.

    Returns ``fitness`` (held-out error: MSE for sine, 1 - accuracy for evidence),
    ``task_error`` (per task), ``learning_curve`` (training loss per iteration, on ``(task,
    iteration)``), ``first_loss``/``last_loss`` (the curve's ends, mean over tasks), ``rate``
    and ``train_rate`` (Hz, held-out and training trials) and, for evidence, ``accuracy``.
    Invalid or diverging hyperparameters (non-finite values, held-out MSE above ``max_mse``)
    give a NaN fitness: l2lflow records a failed evaluation of this individual only.
    """
    ctx = context or EvaluationContext(generation=0, individual=0, seed=seed)
    if int(inner_steps) < 1:
        raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
    p, ok = checked_params(params, DEFAULT_PARAMS, "nest.eprop", _valid)
    if not ok:
        ctx.log.warning("individual %d: invalid parameters %s", ctx.individual, params)
        return {"fitness": math.nan}
    tasks = draw_trials(
        task_family,
        ctx.task_seed,
        n_tasks,
        n_inputs=int(n_inputs),
        n_steps=int(n_steps),
        n_points=int(n_points),
        inner_steps=int(inner_steps),
        n_test_trials=int(n_test_trials),
        max_rate_hz=float(max_rate_hz),
    )
    results = []
    for t, trials in enumerate(tasks):
        own_seed = int(_rng(seed, 1, t).integers(2**62))
        results.append(
            run_task(
                trials,
                p,
                own_seed,
                ctx,
                n_neurons=int(n_neurons),
                inner_steps=int(inner_steps),
                input_gain=float(input_gain),
                tau_out=float(tau_out),
                f_target=float(f_target),
                surrogate_height=float(surrogate_height),
            )
        )
    error = np.array([r["error"] for r in results])
    curves = np.stack([r["curve"] for r in results])
    mse = np.array([r["test_mse"] for r in results])
    diverged = not (
        np.all(np.isfinite(error)) and np.all(np.isfinite(curves)) and np.all(mse <= max_mse)
    )
    if diverged:
        ctx.log.warning("individual %d: diverged (fitness NaN)", ctx.individual)
    out: dict[str, Any] = {
        "fitness": math.nan if diverged else float(error.mean()),
        "task_error": error,
        "learning_curve": curves,
        "first_loss": float(curves[:, 0].mean()),
        "last_loss": float(curves[:, -1].mean()),
        "rate": float(np.mean([r["rate"] for r in results])),
        "train_rate": float(np.mean([r["train_rate"] for r in results])),
    }
    if task_family == "evidence":
        out["accuracy"] = float(np.mean([r["accuracy"] for r in results]))
    return out
