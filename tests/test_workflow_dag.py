"""The Snakemake chain itself: long experiments build their DAG; rules stay thin."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import REPO, run_snakemake, write_config


def test_thousand_generations_build_their_dag(tmp_path: Path) -> None:
    """A 1,000-generation chain (3,001 jobs) resolves without RecursionError (Python's default limit broke near 300 generations)."""
    cfg = write_config(tmp_path, generations=1000)
    t0 = time.perf_counter()
    proc = run_snakemake(tmp_path, cfg, "-n", "--quiet", "rules")
    print(f"dry-run of 1,000 generations: {time.perf_counter() - t0:.1f} s")
    out = proc.stdout + proc.stderr
    for rule in ("sample", "evaluate", "aggregate"):
        assert f"{rule}" in out
    assert "1000" in out  # 1,000 jobs of each rule


def test_rules_are_thin_shell_calls_with_conda_envs() -> None:
    """No `run:` blocks (Snakemake re-parses the workflow for each: ~2 s per job); every step rule names a conda env."""
    text = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    assert "\n    run:" not in text
    for rule in ("sample", "evaluate", "aggregate"):
        block = text.split(f"rule {rule}:")[1].split("\nrule ")[0]
        assert "shell:" in block and "conda:" in block
