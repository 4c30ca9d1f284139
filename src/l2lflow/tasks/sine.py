"""Sine-wave regression: the task family of the LSNN learning-to-learn experiments.

A task is a sinusoid ``y = A sin(f x + phase)`` with a random amplitude ``A`` in [0.1, 5] and
phase in [0, pi] (MAML's family, Finn et al. 2017; Bellec et al. 2018), and in the ``sine``
family also a random frequency ``f`` in [0.5, 2] (``maml`` keeps ``f = 1``). x lies in [-5, 5].
A task is shown to a spiking network as a spike sequence: ``n_points`` x values one after the
other, each for ``n_steps / n_points`` time steps, population-coded over ``n_inputs`` input
neurons (Gaussian tuning curves, Bernoulli spikes); the target of every step is the current
point's y, scored on the second half of each point's window (the first half lets the network
settle). A task has a training sequence and a held-out sequence of *other* x values of the same
sine: learning generalises only if the network learnt y(x), not the training sequence in time.

Everything here is a pure function of the task seed (NumPy only, no simulator), so ``nest.eprop``
(e-prop in NEST) and ``torch.lsnn`` (BPTT in PyTorch) see bit-identical tasks, input spikes and
targets for the same task seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: family name -> whether the frequency is drawn (else 1)
FAMILIES: dict[str, bool] = {"maml": False, "sine": True}

X_RANGE = 5.0
AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
FREQUENCY = (0.5, 2.0)


@dataclass(frozen=True)
class SineTask:
    """One regression task: a sine and the x values of its training and held-out sequences."""

    amplitude: float
    phase: float
    frequency: float
    x_train: np.ndarray
    x_test: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.amplitude * np.sin(self.frequency * np.asarray(x) + self.phase)


def _rng(entropy: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(entropy), spawn_key=key))


def family_varies_frequency(family: str) -> bool:
    """Whether a family draws the frequency; an unknown name is one clear error."""
    if family not in FAMILIES:
        raise ValueError(f"task_family must be one of {sorted(FAMILIES)}, got {family!r}")
    return FAMILIES[family]


def draw_tasks(
    task_seed: int, n_tasks: int, *, n_points: int = 10, vary_frequency: bool = False
) -> list[SineTask]:
    """The tasks of a task seed: a pure function of its arguments (no evaluation seed).

    Task ``t`` comes from its own stream ``(task_seed, t)``, so asking for more tasks leaves the
    first ones unchanged.
    """
    tasks = []
    for t in range(int(n_tasks)):
        rng = _rng(task_seed, 0, t)
        amplitude = float(rng.uniform(*AMPLITUDE))
        phase = float(rng.uniform(*PHASE))
        frequency = float(rng.uniform(*FREQUENCY)) if vary_frequency else 1.0
        x = rng.uniform(-X_RANGE, X_RANGE, size=(2, int(n_points)))
        tasks.append(SineTask(amplitude, phase, frequency, x[0], x[1]))
    return tasks


def point_schedule(n_steps: int, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Which point each time step shows, and whether the step is scored (second half of its
    point's window, after the network had time to respond to the new input)."""
    if n_points < 1 or n_steps < 2 * n_points:
        raise ValueError(f"n_steps ({n_steps}) must be at least 2 * n_points ({n_points})")
    steps = np.arange(n_steps)
    point = steps * n_points // n_steps
    start = np.searchsorted(point, np.arange(n_points))
    length = np.diff(np.append(start, n_steps))
    position = steps - start[point]
    return point, (position >= length[point] // 2)


def encode_task(
    task: SineTask,
    task_seed: int,
    index: int,
    *,
    n_inputs: int,
    n_steps: int,
    n_points: int,
    dt: float,
    max_rate_hz: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Input spikes ``[2, n_steps, n_inputs]`` and targets ``[2, n_steps]`` (train, held-out).

    Population code: input neuron ``i`` prefers ``c_i`` (evenly spaced over the x range) with a
    Gaussian tuning curve two spacings wide; its spikes are Bernoulli draws of ``rate * dt`` from
    the task's own stream, so every individual sees the very same spikes.
    """
    point, _ = point_schedule(n_steps, n_points)
    centres = np.linspace(-X_RANGE, X_RANGE, n_inputs)
    width = 2.0 * (2 * X_RANGE / max(n_inputs - 1, 1))
    rng = _rng(task_seed, 1, index)
    spikes = np.empty((2, n_steps, n_inputs), dtype=np.float32)
    targets = np.empty((2, n_steps), dtype=np.float32)
    for split, xs in enumerate((task.x_train, task.x_test)):
        x = xs[point]
        p = max_rate_hz * dt / 1000.0 * np.exp(-0.5 * ((x[:, None] - centres) / width) ** 2)
        spikes[split] = rng.random((n_steps, n_inputs)) < np.minimum(p, 1.0)
        targets[split] = task(x)
    return spikes, targets
