"""What an optimizee can do, learnt without running the user's code in this process.

Why: the engine (and Snakemake, and ``l2lflow validate``) must know whether an optimizee is
batched, needs a GPU, which array dimensions it returns, and whether the configured options fit
its signature, but importing a user's module can break the importing process. Measured with the
NEST 3.10 wheel: after ``import nest``, OpenSSL segfaults in that process as soon as a TLS
context is created (``python -c "import nest, ssl; ssl.create_default_context()"`` exits with
signal 11), so a user module with ``import nest`` at the top killed the engine when it started
its TLS-secured Dask cluster. So a ``package.module:function`` reference is imported in a
short-lived subprocess (``python -m l2lflow.optimizees.describe``) that answers in JSON; only
the sandboxes on the workers import it for real. Built-in optimizees (registered names) are our
own code, which imports NEST or torch only when an evaluation runs: they resolve in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from l2lflow.optimizees.base import OptimizeeError, check_signature, resolve_optimizee

#: how long importing a user's module may take before it counts as hanging
IMPORT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class OptimizeeInfo:
    """An optimizee's capabilities (:class:`~l2lflow.optimizees.base.Optimizee` without the
    function itself)."""

    name: str
    needs_gpu: bool = False
    prefers_gpu: bool = False
    batched: bool = False
    array_dims: dict[str, tuple[str, ...]] = field(default_factory=dict)
    meta_test: bool = False
    description: str = ""


_CACHE: dict[str, OptimizeeInfo] = {}


def describe_optimizee(reference: str, options: dict[str, Any] | None = None) -> OptimizeeInfo:
    """The capabilities of ``reference``; with ``options``, also check they fit its signature.

    Raises :class:`OptimizeeError` (one line naming the key) like
    :func:`~l2lflow.optimizees.base.resolve_optimizee` and
    :func:`~l2lflow.optimizees.base.check_signature`. Answers are cached per process.
    """
    key = json.dumps([reference, options], sort_keys=True, default=repr)
    if key not in _CACHE:
        if ":" in reference:
            _CACHE[key] = _describe_in_subprocess(reference, options)
        else:
            _CACHE[key] = _describe_here(reference, options)
    return _CACHE[key]


def _describe_here(reference: str, options: dict[str, Any] | None) -> OptimizeeInfo:
    optimizee = resolve_optimizee(reference)
    if options is not None:
        check_signature(optimizee, options)
    return OptimizeeInfo(
        name=optimizee.name,
        needs_gpu=optimizee.needs_gpu,
        prefers_gpu=optimizee.prefers_gpu,
        batched=optimizee.batched,
        array_dims={k: tuple(v) for k, v in optimizee.array_dims.items()},
        meta_test=optimizee.meta_test,
        description=optimizee.description,
    )


def _describe_in_subprocess(reference: str, options: dict[str, Any] | None) -> OptimizeeInfo:
    # the import path of this process, also what it added at run time (Snakemake, pytest)
    path = os.pathsep.join([p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")])
    env = {
        **os.environ,
        "PYNEST_QUIET": os.environ.get("PYNEST_QUIET", "1"),
        "PYTHONPATH": path.rstrip(os.pathsep),
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "l2lflow.optimizees.describe", reference],
            input=json.dumps(options),
            capture_output=True,
            text=True,
            timeout=IMPORT_TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise OptimizeeError(
            f"optimizee.name: importing {reference!r} took longer than {IMPORT_TIMEOUT_S:.0f} s"
        ) from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"code {proc.returncode}"
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise OptimizeeError(
            f"optimizee.name: importing {reference!r} ended the process with {how} ({last})"
        )
    answer = json.loads(lines[-1])
    if "error" in answer:
        raise OptimizeeError(answer["error"])
    answer["array_dims"] = {k: tuple(v) for k, v in answer["array_dims"].items()}
    return OptimizeeInfo(**answer)


def main() -> int:
    """``python -m l2lflow.optimizees.describe REF`` with the options (JSON) on stdin: one JSON
    line on stdout, the capabilities or ``{"error": ...}``. The user module's own prints go to
    stderr, so they cannot corrupt the answer."""
    answer_to = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    options = json.loads(sys.stdin.read() or "null")
    try:
        info: dict[str, Any] = asdict(_describe_here(sys.argv[1], options))
    except OptimizeeError as exc:
        info = {"error": str(exc)}
    answer_to.write(json.dumps(info) + "\n")
    answer_to.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
