"""Spike-pattern classification: the task family of the reservoir optimizees, simulator-free.

``nest.reservoir`` and ``genn.reservoir`` learn the same tasks in the same way and differ only in
the simulator that turns input spikes into reservoir spikes. Everything else lives here, once, so
that one experiment config runs on either simulator with the same meaning and so that, for the
same task seed and evaluation seed, both simulators see the *same* input spikes (what makes their
accuracies comparable):

* the task family: a task has ``n_classes`` classes, each a frozen Poisson spike template on
  ``n_inputs`` channels (:func:`draw_tasks`, a pure function of the task seed);
* the presentation of one task: a noisy copy of a template per sample (jitter, deleted and added
  spikes, :func:`make_sample`), training then test samples in random order, laid out in time
  with gaps, snapped to the simulation grid (:func:`present`);
* the inner learning and its score: spike counts per (sample, neuron, time bin) as features,
  a ridge-regression readout trained on the training samples and scored on the held-out ones
  (:func:`score_readout`); the outer fitness is the mean held-out accuracy (:func:`summarize`).

Randomness: tasks come from the task seed only (every individual of a generation gets the same
tasks, every generation new ones); samples, their order and the network come from the
evaluation seed, one stream per task (:func:`task_seeds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SpikeTask:
    """One classification task: a spike template per class.

    ``templates[c][i]`` holds the sorted spike times (ms, in ``[0, duration_ms)``) of class ``c``
    on input channel ``i``.
    """

    templates: tuple[tuple[np.ndarray, ...], ...]
    duration_ms: float

    @property
    def n_classes(self) -> int:
        return len(self.templates)

    @property
    def n_inputs(self) -> int:
        return len(self.templates[0])


def task_rng(entropy: int, *key: int) -> np.random.Generator:
    """An independent generator for ``(entropy, *key)``: one stream per purpose, never shared."""
    return np.random.default_rng(np.random.SeedSequence(int(entropy), spawn_key=key))


def draw_tasks(
    task_seed: int,
    n_tasks: int,
    *,
    n_classes: int = 3,
    n_inputs: int = 20,
    duration_ms: float = 100.0,
    rate_hz: float = 20.0,
) -> list[SpikeTask]:
    """The tasks of a task seed: a pure function of its arguments (no evaluation seed).

    Task ``t`` comes from its own stream ``(task_seed, t)``, so asking for more tasks leaves the
    first ones unchanged.
    """
    tasks = []
    for t in range(int(n_tasks)):
        rng = task_rng(task_seed, t)
        templates = tuple(
            tuple(
                np.sort(rng.uniform(0.0, duration_ms, rng.poisson(rate_hz * duration_ms / 1000)))
                for _ in range(n_inputs)
            )
            for _ in range(n_classes)
        )
        tasks.append(SpikeTask(templates, float(duration_ms)))
    return tasks


def task_seeds(seed: int, n_tasks: int) -> list[int]:
    """Each task's own seed, drawn from the evaluation seed (stream ``(seed, 1, t)``)."""
    return [int(task_rng(seed, 1, t).integers(2**62)) for t in range(int(n_tasks))]


def make_sample(
    template: tuple[np.ndarray, ...],
    duration_ms: float,
    rng: np.random.Generator,
    *,
    jitter_ms: float,
    p_delete: float,
    extra_rate_hz: float,
) -> list[np.ndarray]:
    """A noisy copy of a template: jittered spikes, some deleted, some random ones added."""
    sample = []
    for spikes in template:
        kept = spikes[rng.random(len(spikes)) >= p_delete]
        moved = kept + rng.normal(0.0, jitter_ms, len(kept))
        extra = rng.uniform(0.0, duration_ms, rng.poisson(extra_rate_hz * duration_ms / 1000))
        times = np.concatenate([moved, extra])
        sample.append(np.sort(times[(times >= 0.0) & (times < duration_ms)]))
    return sample


@dataclass(frozen=True)
class Presentation:
    """How one task is shown to a reservoir in one simulation.

    ``onsets[k]`` is when sample ``k`` of the schedule starts (ms); the schedule is the training
    samples (with STDP: the training samples twice, plastic then frozen), then the test samples.
    ``channels[i]`` holds input channel ``i``'s spike times on the simulation grid (ms, one spike
    per step, none at 0). The readout sees the last ``len(y_train) + len(y_test)`` samples.
    """

    y_train: np.ndarray
    y_test: np.ndarray
    onsets: np.ndarray
    period_ms: float
    channels: list[np.ndarray]

    @property
    def frozen_onsets(self) -> np.ndarray:
        """Onsets of the samples the readout is trained and tested on."""
        return self.onsets[len(self.onsets) - len(self.y_train) - len(self.y_test) :]

    @property
    def end_ms(self) -> float:
        """When the last sample's period ends: the simulated time."""
        return float(self.onsets[-1] + self.period_ms)


def present(
    task: SpikeTask,
    seed: int,
    *,
    n_train_per_class: int,
    n_test_per_class: int,
    gap_ms: float,
    jitter_ms: float,
    p_delete: float,
    extra_rate_hz: float,
    resolution: float,
    stdp: bool = False,
) -> Presentation:
    """Draw a task's samples from ``seed`` (this task's own seed) and lay them out in time."""
    rng = task_rng(seed, 0)
    n_classes = task.n_classes
    period = task.duration_ms + gap_ms
    # samples: train then test, each in a random order (classes interleaved)
    y_train = rng.permutation(np.repeat(np.arange(n_classes), n_train_per_class))
    y_test = rng.permutation(np.repeat(np.arange(n_classes), n_test_per_class))
    noise = {"jitter_ms": jitter_ms, "p_delete": p_delete, "extra_rate_hz": extra_rate_hz}
    train = [make_sample(task.templates[c], task.duration_ms, rng, **noise) for c in y_train]
    test = [make_sample(task.templates[c], task.duration_ms, rng, **noise) for c in y_test]
    # with STDP the training samples are presented first with plasticity on, then all samples
    # again with the weights frozen: the readout must see the network it will be tested with
    schedule = (train if stdp else []) + train + test
    onsets = gap_ms + period * np.arange(len(schedule))
    steps_per_ms = 1.0 / resolution
    channels = []
    for i in range(task.n_inputs):
        t = np.concatenate([s[i] + o for s, o in zip(schedule, onsets, strict=True)])
        t = np.unique(np.round(t * steps_per_ms))  # on the grid, one spike per step
        channels.append(t[t > 0] * resolution)
    return Presentation(y_train, y_test, onsets, period, channels)


def ridge_readout(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int, ridge: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a ridge-regression readout on one-hot targets; return (train, test) predictions.

    Features are standardised with the training statistics (constant features become 0, so a
    silent reservoir gives a constant prediction, i.e. chance). The dual form solves an
    ``n_train x n_train`` system, which is small since there are more features than samples.
    """
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = np.inf
    a = np.hstack([(x_train - mean) / std, np.ones((len(x_train), 1))])
    b = np.hstack([(x_test - mean) / std, np.ones((len(x_test), 1))])
    targets = np.eye(n_classes)[y_train]
    gram = a @ a.T + ridge * a.shape[1] * np.eye(len(a))
    w = a.T @ np.linalg.solve(gram, targets)
    return np.argmax(a @ w, axis=1), np.argmax(b @ w, axis=1)


def spike_features(
    times: np.ndarray,
    senders: np.ndarray,
    first_id: int,
    n_neurons: int,
    onsets: np.ndarray,
    period_ms: float,
    n_bins: int,
) -> np.ndarray:
    """Spike counts per (sample, neuron, time bin) over each sample's presentation period."""
    features = np.zeros((len(onsets), n_neurons, n_bins))
    if len(times) == 0 or len(onsets) == 0:
        return features.reshape(len(onsets), -1)
    k = np.searchsorted(onsets, times, side="right") - 1
    offset = times - onsets[np.maximum(k, 0)]
    ok = (k >= 0) & (offset < period_ms)
    b = np.minimum((offset[ok] / period_ms * n_bins).astype(int), n_bins - 1)
    np.add.at(features, (k[ok], senders[ok] - first_id, b), 1.0)
    return features.reshape(len(onsets), -1)


def score_readout(
    presentation: Presentation,
    times: np.ndarray,
    senders: np.ndarray,
    first_id: int,
    n_neurons: int,
    *,
    n_classes: int,
    n_bins: int,
    ridge: float,
) -> dict[str, float]:
    """The inner learning on a task's recorded reservoir spikes and its score.

    ``times`` (ms) and ``senders`` (ids from ``first_id``) are every reservoir spike of the
    simulation. Returns held-out ``accuracy``, ``train_accuracy`` and the reservoir's mean
    ``rate`` (Hz) while the readout's samples were shown.
    """
    frozen = presentation.frozen_onsets
    n_train = len(presentation.y_train)
    x = spike_features(times, senders, first_id, n_neurons, frozen, presentation.period_ms, n_bins)
    x_train, x_test = x[:n_train], x[n_train:]
    pred_train, pred_test = ridge_readout(x_train, presentation.y_train, x_test, n_classes, ridge)
    t_frozen = times >= frozen[0]
    duration_s = (presentation.end_ms - frozen[0]) / 1000.0
    return {
        "accuracy": float(np.mean(pred_test == presentation.y_test)),
        "train_accuracy": float(np.mean(pred_train == presentation.y_train)),
        "rate": float(np.count_nonzero(t_frozen) / n_neurons / duration_s),
    }


@dataclass(frozen=True)
class TaskFamily:
    """The task family's settings (the reservoir optimizees' shared options), in one place."""

    n_tasks: int = 3
    n_classes: int = 3
    n_inputs: int = 20
    pattern_ms: float = 100.0
    input_rate_hz: float = 20.0
    jitter_ms: float = 20.0
    p_delete: float = 0.4
    extra_rate_hz: float = 15.0
    n_train_per_class: int = 6
    n_test_per_class: int = 8
    gap_ms: float = 20.0
    n_bins: int = 2
    ridge: float = 0.1

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TaskFamily:
        """The family described by an optimizee's options (its keyword arguments, e.g. its
        ``locals()``), which name the fields exactly; other options are ignored."""
        return cls(**{f.name: options[f.name] for f in fields(cls)})

    @property
    def draw_options(self) -> dict[str, Any]:
        """:func:`draw_tasks`'s keywords for this family (after ``task_seed, n_tasks``)."""
        return {
            "n_classes": self.n_classes,
            "n_inputs": self.n_inputs,
            "duration_ms": self.pattern_ms,
            "rate_hz": self.input_rate_hz,
        }

    def present(
        self, task: SpikeTask, seed: int, resolution: float, stdp: bool = False
    ) -> Presentation:
        """A task's samples for this task's own ``seed`` (see :func:`present`)."""
        return present(
            task,
            seed,
            n_train_per_class=self.n_train_per_class,
            n_test_per_class=self.n_test_per_class,
            gap_ms=self.gap_ms,
            jitter_ms=self.jitter_ms,
            p_delete=self.p_delete,
            extra_rate_hz=self.extra_rate_hz,
            resolution=resolution,
            stdp=stdp,
        )

    def score(
        self,
        presentation: Presentation,
        times: np.ndarray,
        senders: np.ndarray,
        first_id: int,
        n_neurons: int,
    ) -> dict[str, float]:
        """The readout's scores on recorded reservoir spikes (see :func:`score_readout`)."""
        return score_readout(
            presentation,
            times,
            senders,
            first_id,
            n_neurons,
            n_classes=self.n_classes,
            n_bins=self.n_bins,
            ridge=self.ridge,
        )


def summarize(results: Sequence[dict[str, float]], n_classes: int) -> dict[str, Any]:
    """One evaluation's metrics from its per-task results: ``fitness`` is the mean held-out
    accuracy (maximise), ``task_accuracy`` the per-task array (stored on the ``task``
    dimension), ``train_accuracy`` and ``rate`` means over tasks, ``chance`` = 1 / n_classes."""
    accuracy = np.array([r["accuracy"] for r in results])
    return {
        "fitness": float(accuracy.mean()),
        "task_accuracy": accuracy,
        "train_accuracy": float(np.mean([r["train_accuracy"] for r in results])),
        "rate": float(np.mean([r["rate"] for r in results])),
        "chance": 1.0 / n_classes,
    }
