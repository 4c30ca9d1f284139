"""Shared by the benchmarks that time the real pipeline (not a benchmark itself: run_all skips
names that start with ``_``)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def snakemake_command(workdir: Path, configfile: Path, *extra: str) -> list[str]:
    """``snakemake`` on the repository's Snakefile in ``workdir``: one core, quiet."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        "1",
        "--quiet",
        *extra,
    ]
