"""The optimizee contract, checked through the same code path a run uses.

What a run relies on, and what :func:`check_optimizee` therefore checks:

* **determinism**: the same parameters and seed give bit-identical results in two fresh
  processes (resume, retries and meta-tests all assume it);
* **batch invariance** (batched optimizees): an individual's result does not depend on the
  batch it is evaluated in, so that ``evaluation.batch_size`` and retries that split a failed
  batch never change a result;
* **bad-parameter isolation**: an individual with invalid parameters fails alone, with a
  reason, and the individuals evaluated beside it (same sandbox, same batch) still succeed.

Evaluations run as in a run: in a sandbox process (``l2lflow.execution.task.evaluate_chunk``), results
normalised as the store would take them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class OptimizeeReport:
    """What the checks saw: the results per individual, and which checks ran."""

    results: list[dict[str, Any]]
    checks: list[str] = field(default_factory=list)


def _spec(name: str, options: dict[str, Any], fitness_key: str, timeout_s: float | None):
    from l2lflow.execution.work import EvaluationSpec
    from l2lflow.optimizees.base import resolve_optimizee

    optimizee = resolve_optimizee(name)
    return optimizee, EvaluationSpec(
        optimizee=name,
        options=dict(options),
        fitness_key=fitness_key,
        timeout_s=timeout_s,
        batched=optimizee.batched,
    )


def _items(params: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "generation": 0,
            "individual": i,
            "seed": int(seed),
            "params": p,
            "attempt": 0,
            "task_seed": 12345,
            "phase": "optimize",
        }
        for i, (p, seed) in enumerate(zip(params, seeds, strict=True))
    ]


def _fresh_chunk(spec: Any, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluate ``items`` as one chunk in a new sandbox process (nothing carried over)."""
    from l2lflow.execution.sandbox import reset_sandbox
    from l2lflow.execution.task import evaluate_chunk

    reset_sandbox()
    try:
        return evaluate_chunk(spec, items)
    finally:
        reset_sandbox()


def _same(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Why two successful results differ (None if they are bit-identical)."""
    fa, fb = np.float64(a["fitness"]), np.float64(b["fitness"])
    if fa.tobytes() != fb.tobytes():
        return f"fitness {a['fitness']!r} != {b['fitness']!r}"
    for kind in ("metrics", "arrays"):
        ka, kb = a.get(kind, {}), b.get(kind, {})
        if sorted(ka) != sorted(kb):
            return f"{kind} {sorted(ka)} != {sorted(kb)}"
        for key in ka:
            x, y = np.asarray(ka[key]), np.asarray(kb[key])
            if x.shape != y.shape or x.tobytes() != y.tobytes():
                return f"{kind[:-1]} {key!r} differs"
    return None


def check_optimizee(
    name: str,
    *,
    space: dict[str, dict[str, Any]],
    options: dict[str, Any] | None = None,
    fitness_key: str = "fitness",
    individuals: int = 4,
    seed: int = 0,
    bad_params: dict[str, Any] | None = None,
    timeout_s: float | None = 600.0,
) -> OptimizeeReport:
    """Check that optimizee ``name`` keeps the contract a run relies on (see module docstring).

    ``space`` is a config-style parameter space; ``individuals`` points are drawn from it with
    ``seed``. ``bad_params`` (values that must fail, e.g. a negative time constant) adds the
    isolation check: that individual must fail with a reason and no other may.
    """
    from l2lflow.space import ParameterSpace

    optimizee, spec = _spec(name, options or {}, fitness_key, timeout_s)
    ps = ParameterSpace.from_config(space)
    rng = np.random.default_rng(seed)
    values = ps.decode(rng.random((individuals, ps.dimension)))
    params = [ps.individual(values, i) for i in range(individuals)]
    seeds = [int(s) for s in rng.integers(1, 2**31 - 1, size=individuals)]
    items = _items(params, seeds)

    first = _fresh_chunk(spec, items)
    report = OptimizeeReport(results=first)
    failed = [(r["individual"], r.get("error", "")) for r in first if not r["ok"]]
    assert not failed, f"{name}: valid parameters failed: {failed}"

    second = _fresh_chunk(spec, items)
    for item, a, b in zip(items, first, second, strict=True):
        why = _same(a, b)
        assert why is None, (
            f"{name} is not deterministic: individual {a['individual']} (seed {item['seed']}) "
            f"gave different results in two fresh processes: {why}"
        )
    report.checks.append("determinism")

    if optimizee.batched:
        alone = [_fresh_chunk(spec, [item])[0] for item in items]
        reversed_batch = _fresh_chunk(spec, items[::-1])[::-1]
        for label, other in (("alone", alone), ("in reverse order", reversed_batch)):
            for a, b in zip(first, other, strict=True):
                why = _same(a, b)
                assert why is None, (
                    f"{name} is not batch-invariant: individual {a['individual']} evaluated "
                    f"{label} differs from the full batch: {why}"
                )
        report.checks.append("batch invariance")

    if bad_params is not None:
        bad = dict(params[0], **bad_params)
        mixed = _items([params[0], bad, params[1 % individuals]], seeds[:1] + seeds[:2])
        out = _fresh_chunk(spec, mixed)
        if optimizee.batched and all(not r["ok"] for r in out):
            # a batched optimizee may fail the whole batch: the engine then retries it in
            # smaller pieces, down to one individual; what matters is the individual alone
            out = [_fresh_chunk(spec, [item])[0] for item in mixed]
        assert not out[1]["ok"], f"{name}: the bad parameters {bad_params} did not fail"
        assert out[1].get("error"), f"{name}: the bad individual failed without a reason"
        good = [r["individual"] for r in (out[0], out[2]) if not r["ok"]]
        assert not good, (
            f"{name}: the bad individual took individuals {good} down with it: "
            f"{[r.get('error', '')[:200] for r in out if not r['ok']]}"
        )
        report.checks.append("bad-parameter isolation")
    return report
