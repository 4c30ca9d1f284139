"""The lean client the Snakemake rules call: stdlib only, so a step costs milliseconds, not seconds.

A per-generation rule runs ``l2lflow step sample|evaluate|aggregate``; this module connects to
the experiment's *engine* (a process that stays up for the whole run and holds the store, the
optimizer and the Dask cluster; see :mod:`l2lflow.engine`) over a Unix socket, starting the
engine if none runs, asks it to do the step, shows progress, and writes the step's sentinel
file once the engine reports the step committed to the store. Importing numpy, zarr or dask here
would cost ~1 s per rule (FACTS.md); none of them is imported.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LOCK_NAME = ".l2lflow.lock"
ENGINE_LOG = "logs/engine.log"
EXIT_LOCKED = 75
START_TIMEOUT_S = 600.0


class ClientError(RuntimeError):
    """The engine could not be reached or refused the step; the message says why."""


def socket_path(results_dir: str | Path) -> str:
    """Where the engine of ``results_dir`` listens (short: Unix socket paths max out at 107)."""
    key = hashlib.sha1(str(Path(results_dir).resolve()).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"l2lflow-{os.getuid()}-{key}.sock")


class StoreLock:
    """An exclusive ``flock`` on ``<results>/.l2lflow.lock``: one writer per results folder.

    The kernel releases it when the holder dies, even by SIGKILL, so a crashed run never leaves
    a stale lock behind.
    """

    def __init__(self, results_dir: str | Path) -> None:
        self.path = Path(results_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ClientError(self.held_message()) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self.fd = fd

    def held_message(self) -> str:
        try:
            holder = self.path.read_text().split()
            who = f"pid {holder[0]} on {holder[1]}" if len(holder) >= 2 else "another process"
        except OSError:
            who = "another process"
        return (
            f"{self.path.parent} is in use by another l2lflow run ({who}); "
            "wait for it to finish or stop it, then run again"
        )

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            self.fd = None


def _connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    return sock


def _start_engine(results_dir: Path, idle_timeout: float) -> subprocess.Popen:
    log_path = results_dir / ENGINE_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    cmd = [
        sys.executable,
        "-m",
        "l2lflow.engine",
        str(results_dir),
        "--idle-timeout",
        str(idle_timeout),
    ]
    # a session of its own: a Ctrl-C meant for Snakemake's jobs does not kill it mid-write; it
    # notices that its client went away and stops by itself (see l2lflow.engine)
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )


def connect_engine(results_dir: Path, *, idle_timeout: float, start: bool = True) -> socket.socket:
    """Connect to the engine of ``results_dir``, starting it first if needed."""
    path = socket_path(results_dir)
    sock = _connect(path)
    if sock is not None or not start:
        if sock is None:
            raise ClientError(f"no engine is running for {results_dir}")
        return sock
    proc = _start_engine(results_dir, idle_timeout)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        sock = _connect(path)
        if sock is not None:
            return sock
        code = proc.poll()
        if code is not None:
            if code == EXIT_LOCKED:
                raise ClientError(StoreLock(results_dir).held_message())
            sock = _connect(path)  # another client's engine may have won the race
            if sock is not None:
                return sock
            raise ClientError(
                f"the l2lflow engine for {results_dir} exited with code {code}:\n"
                + _tail(results_dir / ENGINE_LOG)
            )
        time.sleep(0.02)
    proc.kill()
    raise ClientError(
        f"the l2lflow engine for {results_dir} did not start within {START_TIMEOUT_S} s"
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no engine log)"


class _ProgressView:
    """A progress bar (tqdm) on a terminal; a line every few seconds in a log file."""

    def __init__(self) -> None:
        self.bar = None
        self.last_line = 0.0

    def update(self, p: dict[str, Any]) -> None:
        total, done, failed = p["total"], p["done"], p["failed"]
        finished = done + failed
        if sys.stderr.isatty():
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=f"generation {p['generation']}", unit="eval")
            self.bar.n = finished
            self.bar.set_postfix(done=done, failed=failed, running=p["running"], refresh=False)
            self.bar.refresh()
        elif time.monotonic() - self.last_line > 5.0 or finished == total:
            self.last_line = time.monotonic()
            rate = finished / p["elapsed"] if p["elapsed"] > 0 else 0.0
            eta = (total - finished) / rate if rate > 0 else float("nan")
            print(
                f"generation {p['generation']}: {done} done, {failed} failed, "
                f"{p['running']} running of {total} (ETA {eta:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def request(
    results_dir: str | Path,
    op: str,
    *,
    config_path: str | Path | None = None,
    generation: int | None = None,
    idle_timeout: float = 60.0,
    start: bool = True,
) -> dict[str, Any]:
    """Ask the engine to run one step and wait for its answer (progress is shown meanwhile)."""
    results_dir = Path(results_dir)
    sock = connect_engine(results_dir, idle_timeout=idle_timeout, start=start)
    message = {
        "op": op,
        "generation": generation,
        "config_path": str(Path(config_path).resolve()) if config_path else None,
        "run_id": os.environ.get("L2LFLOW_RUN_ID") or f"ppid-{os.getppid()}",
    }
    view = _ProgressView()
    try:
        sock.sendall((json.dumps(message) + "\n").encode())
        reader = sock.makefile("r", encoding="utf-8")
        for line in reader:
            reply = json.loads(line)
            if reply.get("type") == "progress":
                view.update(reply["progress"])
                continue
            if reply.get("ok"):
                return reply.get("result") or {}
            raise ClientError(reply.get("error", "the engine refused the step"))
        raise ClientError(
            f"the l2lflow engine for {results_dir} went away during '{op}'; its log ends:\n"
            + _tail(results_dir / ENGINE_LOG)
        )
    finally:
        view.close()
        sock.close()


def claim(results_dir: str | Path) -> None:
    """Make sure no other run uses ``results_dir`` before this Snakemake run starts its jobs.

    Why: Snakemake deletes a job's outputs before running it, so a second run in another
    folder would delete the first run's step sentinels before its own steps are refused.
    Called from the workflow's ``onstart``; raises :class:`ClientError` naming the other run.
    """
    results_dir = Path(results_dir)
    sock = _connect(socket_path(results_dir))
    if sock is None:  # no engine: the store's lock may still be held by `l2lflow run`
        lock = StoreLock(results_dir)
        lock.acquire()
        lock.release()
        return
    sock.close()
    request(results_dir, "claim", start=False)


def run_step(
    op: str,
    results_dir: str | Path,
    config_path: str | Path,
    generation: int,
    sentinel: str | Path | None = None,
) -> dict[str, Any]:
    """One Snakemake step: do ``op`` for ``generation`` and write its sentinel when committed."""
    config = json.loads(Path(config_path).read_text())
    idle = float(config.get("execution", {}).get("idle_timeout_s", 60))
    result = request(
        results_dir, op, config_path=config_path, generation=generation, idle_timeout=idle
    )
    if sentinel is not None:
        path = Path(sentinel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(result, sort_keys=True) + "\n")
        os.replace(tmp, path)
    return result
