"""torch.lsnn bounds its memory: a batch that would not fit is split into passes of whole
individuals, with the same bits as one pass (CPU; small networks)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")

from test_torch_lsnn import PARAMS, SEEDS, TASK_SEEDS, TINY, _assert_same  # noqa: E402

from l2lflow.optimizees.base import EvaluationContext  # noqa: E402
from l2lflow.optimizees.torch_lsnn import (  # noqa: E402
    MEMORY_FRACTION,
    lsnn,
    slice_bytes,
    slices_per_pass,
)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _evaluate(max_batch_slices: int | None) -> tuple[list[dict], list[str]]:
    handler = _Lines()
    log = logging.getLogger(f"test.lsnn.memory.{max_batch_slices}")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    contexts = [
        EvaluationContext(generation=0, individual=i, seed=s, task_seed=t, log=log)
        for i, (s, t) in enumerate(zip(SEEDS, TASK_SEEDS, strict=True))
    ]
    out = lsnn(
        PARAMS, SEEDS, contexts=contexts, device="cpu", max_batch_slices=max_batch_slices, **TINY
    )
    log.removeHandler(handler)
    return out, handler.lines


def test_a_batch_that_does_not_fit_is_split_and_gives_the_same_bits() -> None:
    one_pass, quiet = _evaluate(None)  # 5 individuals x 2 tasks fit many times over
    split, said = _evaluate(4)  # 2 individuals per pass: 3 passes
    assert quiet == []
    assert said == [
        "torch.lsnn: 5 individuals x 2 tasks in 3 passes of at most 2 individuals "
        "(max_batch_slices=4)"
    ]
    single, _ = _evaluate(1)  # fewer slices than one individual's tasks: one individual a pass
    for a, b, c in zip(one_pass, split, single, strict=True):
        _assert_same(a, b)
        _assert_same(a, c)


def test_the_automatic_pass_size_keeps_the_reference_batch_within_its_memory_share() -> None:
    """At the benchmark's reference size, 1,024 individuals x 4 tasks need more than a quarter
    of a 24 GB machine, so they are split; each pass plans at most that quarter."""
    ref = dict(n_neurons=200, n_inputs=20, n_steps=200)
    memory = 24 * 2**30
    per_pass = slices_per_pass(memory, **ref)
    assert per_pass < 1024 * 4
    assert per_pass * slice_bytes(**ref) <= MEMORY_FRACTION * memory
    assert slices_per_pass(10**6, **ref) == 1  # never zero: one slice a pass at the least
    assert slice_bytes(**ref, dtype="float64") == 2 * slice_bytes(**ref)


PEAK = """
import sys
from l2lflow.optimizees.base import EvaluationContext
from l2lflow.optimizees.torch_lsnn import lsnn
n = 24
params = [{"inner_lr": 0.05, "w_scale": 1.0}] * n
contexts = [EvaluationContext(generation=0, individual=i, seed=i, task_seed=1) for i in range(n)]
lsnn(params, list(range(n)), contexts=contexts, device="cpu", n_neurons=100, n_inputs=8,
     n_steps=200, inner_steps=1, n_tasks=2, n_points=4, max_batch_slices=int(sys.argv[1]))
# VmHWM: this process's own peak. ru_maxrss is not: Linux carries the high-water mark over
# fork and exec, so a child of a big pytest process reported pytest's size, not its own
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0])
"""


@pytest.mark.slow  # two torch processes of 24 individuals x 2 tasks
@pytest.mark.timeout(900)
def test_splitting_lowers_the_peak_memory_as_estimated() -> None:
    """Peak RSS of 24 individuals x 2 tasks in one pass vs passes of 2 slices: the difference
    is about the 46 slices' estimate (``slice_bytes`` errs on the safe side: measured 45-60 %
    of it at this size, where the allocator's reuse matters more than at the reference size)."""

    def peak_kib(max_slices: int) -> int:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(PEAK), str(max_slices)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        return int(proc.stdout.split()[-1])

    whole, split = peak_kib(48), peak_kib(2)
    saved = (whole - split) * 1024
    estimate = (48 - 2) * slice_bytes(100, 8, 200)
    print(f"\npeak RSS one pass {whole} KiB, passes of 2 slices {split} KiB; estimate {estimate}")
    assert 0.3 * estimate < saved <= 1.1 * estimate
