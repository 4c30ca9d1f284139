"""Evidence accumulation: a classification task family after Bellec et al. (2020), Fig. 3.

A trial shows ``n_cues`` cues, each a short burst on the *left* or the *right* input group, then a
delay, then a *recall* burst; the network must answer, during the recall window, which side had
more cues (``n_cues`` is odd, so there is no tie). Background channels fire at a low rate
throughout. A *task* of the family fixes which input channels form the left, right, recall and
background groups (a random permutation) and how often the majority side cues (``p_majority``
in [0.6, 0.9]); so a network cannot solve a new task without learning it. Trials (their labels
and cue sequences) are drawn per task: training trials and held-out trials never coincide in
their random streams.

Encoded as NumPy arrays on a 1 ms grid, like :mod:`l2lflow.tasks.sine`: input spikes
``[trials, n_steps, n_inputs]``, one-hot targets ``[trials, n_steps, 2]`` (the answer, present in
the recall window), and the scored mask ``[n_steps]`` (the recall window), so any simulator can
learn the very same trials.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: range of the probability that a cue shows the trial's majority side
P_MAJORITY = (0.6, 0.9)


@dataclass(frozen=True)
class EvidenceTask:
    """One task: the channel groups and the cue statistics."""

    left: np.ndarray
    right: np.ndarray
    recall: np.ndarray
    background: np.ndarray
    p_majority: float


@dataclass(frozen=True)
class EvidenceTiming:
    """Trial layout in steps of 1 ms."""

    n_cues: int = 3
    cue_steps: int = 20
    gap_steps: int = 10
    delay_steps: int = 40
    recall_steps: int = 30
    cue_rate_hz: float = 200.0
    background_rate_hz: float = 10.0

    @property
    def n_steps(self) -> int:
        return (
            self.n_cues * (self.cue_steps + self.gap_steps) + self.delay_steps + self.recall_steps
        )

    def recall_mask(self) -> np.ndarray:
        mask = np.zeros(self.n_steps, dtype=bool)
        mask[self.n_steps - self.recall_steps :] = True
        return mask


def _rng(entropy: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(entropy), spawn_key=key))


def draw_tasks(task_seed: int, n_tasks: int, *, n_inputs: int = 20) -> list[EvidenceTask]:
    """The tasks of a task seed (a pure function). Needs ``n_inputs >= 4`` (one per group)."""
    if n_inputs < 4:
        raise ValueError(f"n_inputs must be at least 4 for evidence accumulation, got {n_inputs}")
    group = n_inputs // 4
    tasks = []
    for t in range(int(n_tasks)):
        rng = _rng(task_seed, 0, t)
        order = rng.permutation(n_inputs)
        tasks.append(
            EvidenceTask(
                left=np.sort(order[:group]),
                right=np.sort(order[group : 2 * group]),
                recall=np.sort(order[2 * group : 3 * group]),
                background=np.sort(order[3 * group :]),
                p_majority=float(rng.uniform(*P_MAJORITY)),
            )
        )
    return tasks


def encode_trials(
    task: EvidenceTask,
    task_seed: int,
    index: int,
    split: int,
    n_trials: int,
    *,
    n_inputs: int,
    timing: EvidenceTiming,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_trials`` trials of a task: spikes, one-hot targets, labels (0 left, 1 right).

    ``split`` (0 training, 1 held-out) selects the random stream, so the two never share trials.
    """
    rng = _rng(task_seed, 1, index, split)
    n_steps = timing.n_steps
    dt_s = 1e-3
    spikes = rng.random((n_trials, n_steps, n_inputs)) < timing.background_rate_hz * dt_s
    spikes[:, :, np.concatenate([task.left, task.right, task.recall])] = False
    targets = np.zeros((n_trials, n_steps, 2), dtype=np.float32)
    labels = rng.integers(0, 2, n_trials)
    recall = slice(n_steps - timing.recall_steps, n_steps)  # a view, so writes land in spikes
    period = timing.cue_steps + timing.gap_steps
    for k in range(n_trials):
        majority = labels[k]
        # resample until the majority side really has more cues (n_cues is odd: no tie)
        while True:
            sides = np.where(rng.random(timing.n_cues) < task.p_majority, majority, 1 - majority)
            if (np.sum(sides == majority) * 2) > timing.n_cues:
                break
        for c, side in enumerate(sides):
            channels = task.left if side == 0 else task.right
            window = slice(c * period, c * period + timing.cue_steps)
            burst = rng.random((timing.cue_steps, len(channels))) < timing.cue_rate_hz * dt_s
            spikes[k, window][:, channels] = burst
        burst = rng.random((timing.recall_steps, len(task.recall))) < timing.cue_rate_hz * dt_s
        spikes[k, recall][:, task.recall] = burst
        targets[k, recall, majority] = 1.0
    return spikes, targets, labels
