"""The lean client the Snakemake rules call: stdlib only, so a step costs milliseconds, not seconds.

A per-generation rule runs ``l2lflow step sample|evaluate|aggregate``; this module connects to
the experiment's *engine* (a process that stays up for the whole run and holds the store, the
optimizer and the Dask cluster; see :mod:`l2lflow.engine`) over a Unix socket, starting the
engine if none runs, asks it to do the step, shows progress, and writes the step's sentinel
file once the engine reports the step committed to the store. Importing numpy, zarr or dask here
would cost ~0.7-1 s per rule (measured: a rule that imports numpy, zarr and xarray pays
~0.7 s more per job); none of them is imported.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from l2lflow.progress_channel import ProgressFile, display_dir

LOCK_NAME = ".l2lflow.lock"
ENGINE_LOG = "logs/engine.log"
EXIT_LOCKED = 75
START_TIMEOUT_S = 600.0


class ClientError(RuntimeError):
    """The engine could not be reached or refused the step; the message says why."""


class EngineGone(ClientError):
    """The engine closed the connection without an answer (it died or was shutting down)."""


class NoEngine(ClientError):
    """No engine answers for the results folder (and none was to be started)."""


def runtime_dir() -> str:
    """The folder of this user's engine sockets: ``<tmp>/l2lflow-<uid>`` (``<tmp>`` is ``$TMPDIR``
    or ``/tmp``); ``$L2LFLOW_RUNTIME_DIR`` overrides it.

    Why a private folder: a socket at a predictable path in ``/tmp`` can be squatted by another
    local user, whose fake engine would then answer every step "done". The folder is created
    with mode 0700 and checked with ``lstat`` each time (a real directory, not a symlink, owned
    by this user, no access for group or others); one that fails the check is refused with a
    :class:`ClientError`, never used (a folder of another user in the sticky ``/tmp`` cannot be
    removed by us, and silently choosing another path would split client and engine). Not
    ``$XDG_RUNTIME_DIR``: logind removes it when the user's last session ends, which would cut a
    run left going under ``nohup`` or ``tmux`` off from its engine.
    """
    path = os.environ.get("L2LFLOW_RUNTIME_DIR") or os.path.join(
        tempfile.gettempdir(), f"l2lflow-{os.getuid()}"
    )
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ClientError(
            f"cannot create the engine socket folder {path} ({exc.strerror}); set "
            "L2LFLOW_RUNTIME_DIR to a folder only you can enter"
        ) from None
    problem = _private_dir_problem(path)
    if problem is not None:
        raise ClientError(
            f"refusing the engine socket folder {path}: {problem}; another local user may be "
            "trying to pose as the l2lflow engine. Remove it (or ask an admin to) or set "
            "L2LFLOW_RUNTIME_DIR to a folder only you can enter"
        )
    return path


def _private_dir_problem(path: str) -> str | None:
    """Why ``path`` is not a private folder of this user (``None`` if it is)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot inspect it ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != os.getuid():
        return f"it is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    if st.st_mode & 0o077:
        return f"its mode is {stat.S_IMODE(st.st_mode):o}; only its owner may enter it (700)"
    return None


def socket_path(results_dir: str | Path) -> str:
    """Where the engine of ``results_dir`` listens: in :func:`runtime_dir`, a private folder
    (short: Unix socket paths max out at 107 bytes)."""
    key = hashlib.sha1(str(Path(results_dir).resolve()).encode()).hexdigest()[:16]
    return os.path.join(runtime_dir(), f"{key}.sock")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket
    (``SO_PEERCRED``: filled in by the kernel, so it cannot be faked by the peer)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


class StoreLock:
    """An exclusive ``flock`` on ``<results>/.l2lflow.lock``: one writer per results folder.

    The kernel releases it when the holder dies, even by SIGKILL, so a crashed run never leaves
    a stale lock behind. The file holds ``<pid> <host>`` of the holder, and ``<pid> <host>
    stopping`` once an engine has begun to shut down (it still closes its cluster and store):
    :meth:`acquire` waits for such a holder instead of refusing, so a rerun right after a run
    ended or was killed does not fail as "in use".
    """

    #: how long :meth:`acquire` waits for a holder that is stopping
    STOPPING_WAIT_S = 120.0

    def __init__(self, results_dir: str | Path) -> None:
        self.path = Path(results_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.STOPPING_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = self.holder()
                if holder is None or not holder[2] or time.monotonic() > deadline:
                    os.close(fd)
                    raise ClientError(self.held_message()) from None
                time.sleep(0.1)  # the holder is an engine on its way out
        self._write(fd, "")
        self.fd = fd

    @staticmethod
    def _write(fd: int, note: str) -> None:
        text = f"{os.getpid()} {socket.gethostname()}{' ' + note if note else ''}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)

    def mark_stopping(self) -> None:
        """Tell waiting runs that this holder is shutting down and will release the lock soon."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                self._write(self.fd, "stopping")

    def holder(self) -> tuple[int, str, bool] | None:
        """(pid, host, stopping) as the holder wrote it; ``None`` if unreadable or empty.

        The file outlives its holder: whether the lock is *held* only the ``flock`` (or a
        running engine, see :func:`engine_pid`) tells.
        """
        try:
            parts = self.path.read_text().split()
            return int(parts[0]), parts[1], parts[2:] == ["stopping"]
        except (OSError, ValueError, IndexError):
            return None

    def held_message(self) -> str:
        holder = self.holder()
        who = f"pid {holder[0]} on {holder[1]}" if holder else "another process"
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
    """A connection to the engine at ``path``, ``None`` if none listens there.

    Raises :class:`ClientError` if the process listening there is not this user's: its answers
    (for instance "step done") must not be trusted.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    pid, uid, _ = peer_credentials(sock)
    if uid != os.getuid():
        sock.close()
        raise ClientError(
            f"refusing the engine at {path}: it is served by uid {uid} (pid {pid}), not by you "
            f"(uid {os.getuid()}); another local user may be posing as the l2lflow engine"
        )
    return sock


def engine_pid(results_dir: str | Path) -> int | None:
    """The pid of the live engine of ``results_dir`` (this user's), ``None`` if none runs.

    A cheap liveness check for ``l2lflow status`` and tests: it connects to the engine's socket
    and reads the peer's pid from the kernel (``SO_PEERCRED``); it sends no request, so it never
    takes part in a run. An engine that is stopping has closed its socket already (``None``);
    its lock file then says ``stopping`` (see :class:`StoreLock`).
    """
    try:
        sock = _connect(socket_path(results_dir))
    except (ClientError, OSError):
        return None
    if sock is None:
        return None
    with sock:
        return peer_credentials(sock)[0]


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
            raise NoEngine(f"no engine is running for {results_dir}")
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
            eta = f"{(total - finished) / rate:.0f} s" if rate > 0 else "?"
            print(
                f"generation {p['generation']}: {done} done, {failed} failed, "
                f"{p['running']} running of {total} (ETA {eta})",
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
        # the process of the run (Snakemake) this step belongs to: the engine stops when it dies
        "run_pid": _run_pid(),
    }
    folder = display_dir()  # a display (the Snakemake logger plugin) draws the progress
    view = ProgressFile(folder, results_dir) if folder is not None else _ProgressView()
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
        raise EngineGone(
            f"the l2lflow engine for {results_dir} went away during '{op}'; its log ends:\n"
            + _tail(results_dir / ENGINE_LOG)
        )
    finally:
        view.close()
        sock.close()


def _run_pid() -> int | None:
    value = os.environ.get("L2LFLOW_RUN_PID", "")
    return int(value) if value.isdigit() else None


def claim(results_dir: str | Path, config_path: str | Path | None = None) -> None:
    """Make sure no other run uses ``results_dir`` before this Snakemake run starts its jobs.

    Why: Snakemake deletes a job's outputs before running it, so a second run in another
    folder would delete the first run's step sentinels before its own steps are refused.
    Called from the workflow's ``onstart``; raises :class:`ClientError` naming the other run.
    With ``config_path``, the engine is started if none runs, and opens the experiment and
    starts its worker pools at once, while Snakemake starts the first steps.
    """
    results_dir = Path(results_dir)
    sock = _connect(socket_path(results_dir))
    if sock is None:  # no engine: the store's lock may still be held by `l2lflow run`
        _wait_for_store_lock(results_dir)
        if config_path is None:
            return
    else:
        sock.close()
    try:
        request(
            results_dir,
            "claim",
            config_path=config_path,
            idle_timeout=_idle_timeout(config_path) if config_path is not None else 60.0,
            start=config_path is not None,
        )
    except (ConnectionError, EngineGone, NoEngine):
        # the engine of a run that just died was shutting down and dropped the connection (or
        # was gone by the time of the request): wait (bounded) for it to let go of the results,
        # as when no engine answers at all
        _wait_for_store_lock(results_dir)


def _wait_for_store_lock(results_dir: Path) -> None:
    """Return once nothing holds the results folder's lock (bounded: an engine on its way out
    is waited for, a live holder raises :class:`ClientError` naming it)."""
    lock = StoreLock(results_dir)
    lock.acquire()
    lock.release()


def _idle_timeout(config_path: str | Path) -> float:
    """The engine's idle timeout from the run's resolved config (``execution.idle_timeout_s``)."""
    config = json.loads(Path(config_path).read_text())
    return float(config.get("execution", {}).get("idle_timeout_s", 60))


def run_step(
    op: str,
    results_dir: str | Path,
    config_path: str | Path,
    generation: int,
    sentinel: str | Path | None = None,
) -> dict[str, Any]:
    """One Snakemake step: do ``op`` for ``generation`` and write its sentinel when committed."""
    result = request(
        results_dir,
        op,
        config_path=config_path,
        generation=generation,
        idle_timeout=_idle_timeout(config_path),
    )
    if sentinel is not None:
        path = Path(sentinel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(result, sort_keys=True) + "\n")
        os.replace(tmp, path)
    return result
