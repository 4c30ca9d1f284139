"""Run every benchmark in ``benchmarks/`` and print one table: benchmark, figure, value, target.

A benchmark is any ``benchmarks/*.py`` script (not this one, not ``_*.py``) whose last output
line is ``key=value key=value ...``. Its targets are read from its docstring, where it states
them as ``Target(s): key <= x, key >= y`` (a lone ``Target >= x`` applies to its only figure);
``EXTRA_TARGETS`` below adds targets that hold only under a condition (the GPU figures on an
H200). A new benchmark needs no registration here.

``--quick`` runs each with small settings: its own ``--quick`` option if it has one, else the
arguments in ``QUICK_ARGS``. Quick figures show that everything runs; they do not meet the
targets by design (fixed costs are amortised over fewer evaluations), so the ``met`` column is
marked "(quick)" and ``--strict`` ignores it. ``--only a,b`` runs a subset; ``--skip`` leaves some out.

Output: a Markdown table on stdout (progress and failures on stderr). Exit code 1 if a
benchmark failed to run, or with ``--strict`` if a target was missed.
"""

from __future__ import annotations

import argparse
import ast
import math
import operator
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: small settings for benchmarks without a ``--quick`` option of their own
QUICK_ARGS: dict[str, list[str]] = {
    "dispatch": ["--population", "200", "--generations", "5", "--small-generations", "5"],
    "nest_throughput": ["--individuals", "4", "--neurons", "500", "--sim-ms", "200"],
}

#: targets that hold only under a condition on the last line's other values
#: (benchmark -> figure -> (operator, value, {key: required value}, note))
EXTRA_TARGETS: dict[str, dict[str, tuple[str, float, dict[str, str], str]]] = {
    "gpu_batch": {
        "speedup": (">=", 500.0, {"device": "cuda", "individuals": "1024"}, "H200, 1,024 ind."),
        "batched_per_s": (">=", 5000.0, {"device": "cuda", "individuals": "8192"}, "H200, 8,192"),
    },
}

OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_UNICODE = {"≤": "<=", "≥": ">="}
_TARGET = re.compile(
    r"(?:\b(?P<key>[a-z_][a-z0-9_]*)\s*)?(?P<op><=|>=|≤|≥|<|>)\s*(?P<value>-?\d[\d,]*(?:\.\d+)?)"
)


@dataclass
class Target:
    op: str
    value: float
    when: dict[str, str]
    note: str = ""

    def text(self) -> str:
        op = {"<=": "≤", ">=": "≥"}.get(self.op, self.op)
        note = f" ({self.note})" if self.note else ""
        return f"{op} {self.value:g}{note}"

    def applies(self, figures: dict[str, str]) -> bool:
        return all(figures.get(k) == v for k, v in self.when.items())

    def met(self, value: float) -> bool:
        return OPS[self.op](value, self.value)


def discover(folder: Path = HERE) -> list[Path]:
    """Every benchmark script in ``folder``, sorted by name."""
    return sorted(
        p for p in folder.glob("*.py") if p.name != Path(__file__).name and not p.name[0] == "_"
    )


def docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def targets_of(path: Path) -> tuple[dict[str, Target], Target | None]:
    """The targets a benchmark's docstring states: (by figure, one without a figure name)."""
    found: dict[str, Target] = {}
    anonymous = None
    text = " ".join(docstring(path).split())
    for sentence in re.findall(r"Targets?\b[^.]*(?:\.\d[^.]*)*", text):
        sentence = re.sub(r"\([^)]*\)", "", sentence)  # "(L2L: ~10,000 ms ...)" is no target
        for m in _TARGET.finditer(sentence):
            op = _UNICODE.get(m["op"], m["op"])
            target = Target(op, float(m["value"].replace(",", "")), {})
            if m["key"] and m["key"] not in ("target", "targets"):
                found[m["key"]] = target
            else:
                anonymous = target
    for key, (op, value, when, note) in EXTRA_TARGETS.get(path.stem, {}).items():
        found.setdefault(key, Target(op, value, when, note))
    return found, anonymous


def parse_last_line(stdout: str) -> dict[str, str]:
    """``key=value`` pairs of the last line that has any."""
    for line in reversed(stdout.strip().splitlines()):
        pairs = dict(re.findall(r"([A-Za-z_][\w.]*)=(\S+)", line))
        if pairs:
            return pairs
    return {}


def _number(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def command(path: Path, quick: bool) -> list[str]:
    cmd = [sys.executable, str(path)]
    if quick:
        if "--quick" in path.read_text():
            cmd.append("--quick")
        else:
            cmd += QUICK_ARGS.get(path.stem, [])
    return cmd


def run(path: Path, quick: bool, timeout: float) -> tuple[dict[str, str], float, str]:
    """(figures of the last line, wall seconds, error text or "")."""
    cmd = command(path, quick)
    print(f"run_all: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {}, time.perf_counter() - t0, f"timed out after {timeout:g} s"
    wall = time.perf_counter() - t0
    figures = parse_last_line(proc.stdout)
    if proc.returncode != 0 or not figures:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        why = tail[-1] if tail else "no output"
        return figures, wall, f"exit {proc.returncode}: {why}"
    return figures, wall, ""


def table(rows: list[list[str]]) -> str:
    head = ["benchmark", "figure", "value", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small settings for every benchmark")
    parser.add_argument("--only", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--skip", help="comma-separated benchmark names to leave out")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--dir", type=Path, default=HERE, help="benchmark folder (default: here)")
    args = parser.parse_args(argv)

    benches = discover(args.dir)
    known = [p.stem for p in benches]
    for option in ("only", "skip"):
        names = [n.strip() for n in (getattr(args, option) or "").split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"--{option}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
        if option == "only" and names:
            benches = [p for p in benches if p.stem in names]
        elif names:
            benches = [p for p in benches if p.stem not in names]

    rows: list[list[str]] = []
    failed = missed = 0
    for path in benches:
        figures, wall, error = run(path, args.quick, args.timeout)
        targets, anonymous = targets_of(path)
        if anonymous is not None and len(figures) == 1:
            targets.setdefault(next(iter(figures)), anonymous)
        if error:
            failed += 1
            print(f"run_all: {path.stem} failed: {error}", file=sys.stderr)
            rows.append([path.stem, "(did not run)", error.replace("|", "/"), "", "✗"])
            continue
        print(f"run_all: {path.stem} took {wall:.1f} s", file=sys.stderr)
        for key, value in figures.items():
            target = targets.get(key)
            x = _number(value)
            if target is None:
                met = ""
            elif not target.applies(figures):
                met = "n/a here"
            elif x is None:
                met = "?"
            else:
                met = "✓" if target.met(x) else "✗"
                if args.quick:
                    met += " (quick)"
                elif met == "✗":
                    missed += 1
            rows.append([path.stem, key, value, target.text() if target else "", met])
    mode = "quick settings" if args.quick else "full settings"
    print(f"benchmarks ({mode}, {len(benches)} run, {failed} failed)\n")
    print(table(rows))
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
