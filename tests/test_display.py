"""The run as people watch it: the l2lflow Snakemake logger plugin (on by default through the
workflow profile ``profiles/default``) and ``l2lflow run``, on a terminal and elsewhere.

Real Snakemake runs of a small experiment: on a pipe (plain timestamped lines, no ANSI codes, one
line per generation, a closing summary) and under a pseudo-terminal (the live view redrawn in
place), with failures counted by reason and a failed step's error shown in full.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from helpers import REPO, SNAKEFILE, run_snakemake, write_config

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STAMP = re.compile(r"^\d\d:\d\d:\d\d ")


def faulty_config(tmp_path: Path, **overrides):
    """Two generations of six; individual 1 raises, individual 2 returns NaN (no retries)."""
    return write_config(
        tmp_path,
        generations=2,
        population_size=6,
        optimizee={"name": "test.faulty", "options": {"faults": {"1": "raise", "2": "nan"}}},
        evaluation={"retries": 0, "timeout_s": 30},
        **overrides,
    )


def test_plugin_is_found_by_name() -> None:
    """Snakemake finds logger plugins by module name: the package ships inside l2lflow."""
    from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry

    plugin = LoggerPluginRegistry().get_plugin("l2lflow")
    assert plugin.log_handler.__module__ == "snakemake_logger_plugin_l2lflow"
    profile = (REPO / "profiles" / "default" / "config.yaml").read_text()
    assert "logger: [l2lflow]" in profile


def test_non_tty_plain_lines_per_generation_and_summary(tmp_path: Path) -> None:
    cfg = faulty_config(tmp_path)
    proc = run_snakemake(tmp_path, cfg)
    out = proc.stdout + proc.stderr
    assert not ANSI.search(out), out
    lines = out.splitlines()
    assert len(lines) < 60, out
    # Snakemake's job blocks are folded away
    assert "jobid:" not in out and "Job stats" not in out and "localrule" not in out, out
    gens = [line for line in lines if re.search(r"\] generation \d+:", line)]
    assert len(gens) == 2, out
    for line in gens:
        assert STAMP.match(line), line
        # 4 done, 2 failed, counted by reason; best and mean of the successful ones
        assert "4 done, 2 failed (exception 1, nonfinite 1)" in line, line
        assert "best " in line and "mean " in line, line
    assert "ETA" in gens[0] and "workers cpu 2" in gens[0], gens[0]
    assert "finished (2 generations × 6)" in out, out
    assert "best fitness" in out and "failures: 4 of 12 evaluations" in out, out
    assert f"store: {tmp_path / 'results' / 't' / 'results.zarr'}" in out, out
    assert "l2lflow status" in out and "--report report.html figures" in out, out


def test_failed_step_error_is_shown_in_full(tmp_path: Path) -> None:
    """A step the engine refuses: Snakemake's error block and the step's own message."""
    cfg = write_config(tmp_path, generations=1, evaluation={"device": "gpu"})
    proc = run_snakemake(tmp_path, cfg, check=False, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error in rule evaluate" in out, out
    assert "needs a 'gpu' worker pool" in out, out  # what the step wrote to its stderr
    assert "stopped after 0 of 1 generations" in out and "resume:" in out, out


def _run_in_pty(cmd: list[str], cwd: Path, timeout: float = 240) -> tuple[int, str]:
    """Run ``cmd`` with a pseudo-terminal as stdin/stdout/stderr; its output and exit code."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "LINES": "30", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_tty_live_view_and_summary(tmp_path: Path) -> None:
    cfg = faulty_config(tmp_path)
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path),
        "--configfile", str(cfg), "--cores", "1",
    ]  # fmt: skip
    code, out = _run_in_pty(cmd, tmp_path)
    assert code == 0, out
    assert "\x1b[" in out and "\x1b[1A" in out, out  # drawn, and redrawn in place
    plain = ANSI.sub("", out)
    assert "generations ·" in plain and "ETA" in plain, plain  # the whole-run bar
    assert re.search(r"\d+ done · \d+ failed · \d+ running of 6", plain), plain
    assert "failures: exception" in plain, plain
    assert "jobid:" not in plain, plain
    assert "finished (2 generations × 6)" in plain and "best fitness" in plain, plain


def test_l2lflow_run_uses_the_same_display(tmp_path: Path) -> None:
    cfg = faulty_config(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "l2lflow", "run", str(cfg)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert not ANSI.search(proc.stdout)
    gens = [line for line in proc.stdout.splitlines() if "] generation" in line]
    assert len(gens) == 2 and all(STAMP.match(g) for g in gens), proc.stdout
    assert "4 done, 2 failed (exception 1, nonfinite 1)" in gens[1], gens[1]
    assert "finished (2 generations × 6)" in proc.stdout, proc.stdout
    assert "snakemake" not in proc.stdout.split("next:")[1]  # no Snakemake command to suggest


def test_snakemake_logger_option_without_workflow_profile(tmp_path: Path) -> None:
    """`--logger l2lflow` works by itself; `--workflow-profile none` gives Snakemake's output."""
    cfg = write_config(tmp_path, generations=1, population_size=4)
    own = run_snakemake(tmp_path, cfg, "--workflow-profile", "none", "--logger", "l2lflow")
    assert "] generation 0:" in own.stderr and "jobid:" not in own.stderr, own.stderr
    cfg2 = write_config(tmp_path / "plain", generations=1, population_size=4)
    plain = run_snakemake(tmp_path / "plain", cfg2, "--workflow-profile", "none")
    assert "jobid:" in plain.stdout + plain.stderr


def test_dry_run_shows_snakemakes_job_list(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, generations=2)
    proc = run_snakemake(tmp_path, cfg, "-n")
    for rule in ("sample", "evaluate", "aggregate"):
        assert rule in proc.stdout
