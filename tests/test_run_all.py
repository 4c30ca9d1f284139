"""``benchmarks/run_all.py``: finds benchmark scripts, runs them, reads their last line and the
targets their docstrings state, and prints one table; a failing benchmark is a row, not a crash.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import REPO

RUN_ALL = REPO / "benchmarks" / "run_all.py"

BENCHES = {
    "speed.py": '''"""Speed.

Last line: ``speed_s=<s> ratio=<x> device=<d>``. Targets: speed_s <= 2, ratio >= 3 (not: x < 9).
"""
print("some detail")
print("speed_s=1.5 ratio=2 device=cpu")
''',
    "lone.py": '''"""A single figure. Target ≥ 0.90."""
import sys
print("eff=0.95" if "--quick" in sys.argv else "eff=0.5")
''',
    "broken.py": '''"""Fails."""
raise SystemExit("boom: no simulator here")
''',
    "_helper.py": "raise SystemExit('not a benchmark')\n",
}


def _run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUN_ALL), "--dir", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _rows(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


def test_run_all_table_targets_and_failures(tmp_path) -> None:
    for name, text in BENCHES.items():
        (tmp_path / name).write_text(text)
    out = _run(tmp_path)
    assert out.returncode == 1, out.stderr  # broken.py did not run
    assert "benchmarks (full settings, 3 run, 1 failed)" in out.stdout
    assert _rows(out.stdout) == [
        ["broken", "(did not run)", "exit 1: boom: no simulator here", "", "✗"],
        ["lone", "eff", "0.5", "≥ 0.9", "✗"],
        ["speed", "speed_s", "1.5", "≤ 2", "✓"],
        ["speed", "ratio", "2", "≥ 3", "✗"],
        ["speed", "device", "cpu", "", ""],
    ]
    assert "run_all: broken failed: exit 1: boom" in out.stderr

    # missed targets fail only with --strict; --quick passes the benchmark's own --quick
    assert _run(tmp_path, "--skip", "broken").returncode == 0
    assert _run(tmp_path, "--skip", "broken", "--strict").returncode == 1
    quick = _run(tmp_path, "--quick", "--only", "lone", "--strict")
    assert quick.returncode == 0, quick.stderr
    assert _rows(quick.stdout) == [["lone", "eff", "0.95", "≥ 0.9", "✓ (quick)"]]

    bad = _run(tmp_path, "--only", "nope")
    assert bad.returncode == 2 and "--only: unknown nope (known: broken, lone, speed)" in bad.stderr


def test_run_all_knows_the_project_benchmarks() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import run_all
    finally:
        sys.path.pop(0)
    names = [p.stem for p in run_all.discover()]
    assert {"dispatch", "nest_throughput", "scale"} <= set(names)
    for path in run_all.discover():
        targets, anonymous = run_all.targets_of(path)
        assert "Last line" in run_all.docstring(path), f"{path.name}: document the last line"
        if path.stem == "scale":
            assert {k: (t.op, t.value) for k, t in targets.items()} == {
                "dag_s": ("<=", 2.0),
                "open_s": ("<=", 2.0),
            }
        if path.stem == "dispatch":
            assert {k: (t.op, t.value) for k, t in targets.items()} == {
                "per_eval_ms": ("<=", 0.5),
                "pool_ratio": ("<=", 10.0),
                "per_gen_ms": ("<=", 250.0),
            }
        if path.stem == "nest_throughput":
            assert (anonymous.op, anonymous.value) == (">=", 0.9)
