"""Process isolation: a worker runs its evaluations inside a long-lived *sandbox* process.

Why a sandbox: an optimizee may raise, return NaN, hang in C code, or kill its process
(``os.abort()``, a segfault in a simulator). The Dask worker thread only talks to the sandbox
over a pipe and waits with a timeout, so it can kill a hung evaluation, notice a crashed one,
and record either as a failed evaluation with its reason, while the worker itself stays alive
and keeps heartbeating. The sandbox lives as long as its worker (NEST is imported once per
worker, not once per evaluation), is restarted after a crash or timeout, and dies with its
worker, so it can never be orphaned.

Nothing an optimizee starts outlives its sandbox either (a ``subprocess``, a forked grandchild,
a ``setsid`` daemon):

- each sandbox is a session and process group of its own, killed as a group;
- it is a child subreaper (``PR_SET_CHILD_SUBREAPER``): orphaned descendants are reparented to
  it, not to init, so they stay in its process tree;
- its parent-death signal (``PR_SET_PDEATHSIG``, SIGKILL) fires when the *thread* that started
  it ends, not the process: sandboxes are therefore started from one spawner thread that lives
  as long as the worker (a Dask executor thread may end long before its worker);
- a tiny *guard* process beside it (a child in a session of its own) waits for the sandbox to
  die, however it dies (timeout, crash, worker killed), then kills the sandbox's process group
  and every process that carries the sandbox's token (``L2LFLOW_SANDBOX`` in its environment,
  inherited by all descendants, also by ``setsid`` ones that left the group).
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

from l2lflow.execution.work import EvaluationResult, EvaluationSpec, failure

#: environment variable that marks a sandbox and all its descendants (value: the sandbox's token)
SANDBOX_TOKEN_VAR = "L2LFLOW_SANDBOX"
_PARENT_VAR = "L2LFLOW_SANDBOX_PARENT"

#: the guard of one sandbox (stdlib only, run with ``python -I -S``): argv = sandbox pid, token
_GUARD = r"""
import ctypes, os, signal, sys, time
sandbox, token = int(sys.argv[1]), sys.argv[2].encode()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGHUP, signal.SIGINT})
ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: tell me when the sandbox dies
while os.getppid() == sandbox:
    signal.sigtimedwait({signal.SIGTERM, signal.SIGHUP, signal.SIGINT}, 1.0)
needle = b"L2LFLOW_SANDBOX=" + token
for _ in range(20):  # until a scan finds nobody (a process may fork while we kill)
    try:
        os.killpg(sandbox, signal.SIGKILL)
        found = True
    except OSError:
        found = False
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    os.kill(int(entry), signal.SIGKILL)
                    found = True
        except OSError:
            pass
    if not found:
        break
    time.sleep(0.05)
"""


def _prctl(option: int, value: int) -> bool:
    """``prctl(option, value)`` on Linux; False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(option, value) == 0
    except Exception:  # noqa: BLE001 - no libc prctl: the guard still sweeps
        return False


def _become_sandbox() -> bool:
    """Tie this process to its worker and start its guard; False if the worker is gone already."""
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the worker (no orphans mid-C-call)
    if str(os.getppid()) != os.environ.get(_PARENT_VAR, str(os.getppid())):
        return False  # the worker died before the line above
    _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphaned descendants stay in this process's tree
    token = os.environ.get(SANDBOX_TOKEN_VAR)
    if token:
        env = {k: v for k, v in os.environ.items() if k != SANDBOX_TOKEN_VAR}
        subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _GUARD, str(os.getpid()), token],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
            close_fds=True,
            start_new_session=True,  # a kill of the sandbox's group must not take it along
        )
    return True


def _reap_adopted() -> None:
    """Collect exited orphans this subreaper adopted (between evaluations: no zombies pile up)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _sandbox_main() -> None:
    """Entry point of the sandbox process: evaluate what arrives on stdin, answer on stdout."""
    if not _become_sandbox():
        return
    from l2lflow.execution.task import run_batch, run_one, warm_optimizee  # as on a worker

    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # an optimizee's prints go to the worker's log, not into the protocol
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
    receive, send = Connection(fd_in, writable=False), Connection(fd_out, readable=False)
    send.send(_SANDBOX_READY)  # started: the evaluations' clocks start after this
    while True:
        _reap_adopted()
        try:
            spec, items = receive.recv()
        except (EOFError, OSError):
            return
        if not items:  # warm-up (see warm_up): import what the first evaluation would import
            with contextlib.suppress(Exception):  # its evaluations report any failure properly
                warm_optimizee(spec)
        elif spec.batched:
            for result in run_batch(spec, items):
                send.send(result)
        else:
            for item in items:
                send.send(run_one(spec, item))


class _Spawner:
    """One thread that starts every sandbox of this process and lives as long as the process.

    Why: Linux sends the parent-death signal when the *thread* that forked the child ends, and
    a sandbox started from a Dask executor thread would be killed when that thread ends, while
    its worker lives on (or, with another death signal, outlive the worker).
    """

    def __init__(self) -> None:
        self.requests: queue.Queue = queue.Queue()
        self.pid = os.getpid()
        threading.Thread(target=self._loop, name="l2lflow-sandbox-spawner", daemon=True).start()

    def _loop(self) -> None:
        while True:
            make, answer = self.requests.get()
            try:
                answer.put((True, make()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                answer.put((False, exc))

    def run(self, make: Callable[[], Any]) -> Any:
        answer: queue.Queue = queue.Queue(maxsize=1)
        self.requests.put((make, answer))
        ok, value = answer.get()
        if not ok:
            raise value
        return value


_SPAWNER: _Spawner | None = None
_SPAWNER_LOCK = threading.Lock()


def _spawner() -> _Spawner:
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None or _SPAWNER.pid != os.getpid():  # not inherited across a fork
            _SPAWNER = _Spawner()
        return _SPAWNER


#: the sandbox's first message: it has started (interpreter up, l2lflow imported)
_SANDBOX_READY = "l2lflow-sandbox-ready"
#: how long a sandbox may take to start; its start-up is not counted in any evaluation's timeout
SANDBOX_START_TIMEOUT_S = 120.0


class Sandbox:
    """A child process that evaluates one individual at a time (see module docstring)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env.setdefault("PYNEST_QUIET", "1")
        self.token = f"{os.getpid()}-{uuid.uuid4().hex}"
        env[SANDBOX_TOKEN_VAR] = self.token
        env[_PARENT_VAR] = str(os.getpid())
        self.process: subprocess.Popen = _spawner().run(
            lambda: subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from l2lflow.execution.sandbox import _sandbox_main; _sandbox_main()",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                close_fds=True,
                start_new_session=True,  # its own process group, killed as one
            )
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._send = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self._receive = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self._started = False

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _await_start(self) -> bool:
        """Wait (bounded) until the sandbox says it has started; False (and killed) if it did not.

        A fresh sandbox starts an interpreter and imports l2lflow and numpy: on a busy machine
        that takes seconds, and counted in the first evaluation's ``timeout_s`` it failed
        healthy evaluations, and each failure's fresh sandbox the next one.
        """
        if not self._started:
            try:
                if self._receive.poll(SANDBOX_START_TIMEOUT_S):
                    self._started = self._receive.recv() == _SANDBOX_READY
            except (EOFError, OSError):
                self._started = False
            if not self._started:
                self.kill()
        return self._started

    def start_chunk(self, spec: EvaluationSpec, items: list[dict[str, Any]]) -> bool:
        """Send a whole chunk; the sandbox streams one result back per item, in order."""
        if not self._await_start():
            return False
        try:
            self._send.send((spec, items))
        except (BrokenPipeError, OSError):
            return False
        return True

    def next_result(self, spec: EvaluationSpec, item: Mapping[str, Any]) -> EvaluationResult:
        """Wait for ``item``'s result, at most ``spec.timeout_s`` (None: no limit)."""
        start = time.perf_counter()
        try:
            answered = self._receive.poll(spec.timeout_s)
        except OSError:  # closed: the sandbox never started
            return self._crashed(item, start)
        if not answered:
            self.kill()
            return failure(
                item,
                "timeout",
                f"TimeoutError: the evaluation ran longer than evaluation.timeout_s="
                f"{spec.timeout_s} s and was killed",
                time.perf_counter() - start,
            )
        try:
            return self._receive.recv()
        except (EOFError, OSError):
            return self._crashed(item, start)

    def _crashed(self, item: Mapping[str, Any], start: float) -> EvaluationResult:
        code = self.process.wait()
        if code < 0:
            try:
                what = f"signal {-code} ({signal.Signals(-code).name})"
            except ValueError:
                what = f"signal {-code}"
        else:
            what = f"exit code {code}"
        return failure(
            item,
            "crash",
            f"ProcessCrash: the evaluation's process died with {what}",
            time.perf_counter() - start,
        )

    def kill(self) -> None:
        """Kill the sandbox with its process group (its guard then kills the rest)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
        for conn in (self._send, self._receive):
            with contextlib.suppress(OSError):
                conn.close()


_SANDBOX: Sandbox | None = None
#: one chunk per sandbox at a time
SANDBOX_LOCK = threading.Lock()


def current_sandbox() -> Sandbox:
    """This worker's sandbox, started (again) when there is none or it died."""
    global _SANDBOX
    if _SANDBOX is None or not _SANDBOX.alive:
        _SANDBOX = Sandbox()
    return _SANDBOX


def warm_up(spec: EvaluationSpec) -> None:
    """Start this worker's sandbox and have it import the optimizee (a ``Client.run`` target).

    Why: a sandbox's start (an interpreter and l2lflow) and an optimizee's imports (NEST: 0.5 s)
    otherwise delay the first chunk of every worker. Sent while the run starts, it overlaps
    with Snakemake's first steps. ``Client.run`` calls this in the worker's event loop, so the
    work happens in a thread of its own; a chunk that arrives meanwhile waits for the sandbox
    it would have started itself, and one that holds it already makes the warm-up moot.
    """

    def start() -> None:
        if not SANDBOX_LOCK.acquire(blocking=False):
            return
        try:
            current_sandbox().start_chunk(spec, [])
        finally:
            SANDBOX_LOCK.release()

    threading.Thread(target=start, name="l2lflow-sandbox-warm-up", daemon=True).start()


def reset_sandbox() -> None:
    """Kill this worker's sandbox (after a timeout or crash); the next chunk starts a fresh one."""
    global _SANDBOX
    if _SANDBOX is not None:
        _SANDBOX.kill()
    _SANDBOX = None


if __name__ == "__main__":  # pragma: no cover
    _sandbox_main()
