"""The engine: one long-lived process per experiment that does the steps the rules ask for.

Why: a Snakemake job that starts Python and imports the data stack costs ~1 s, a Dask cluster
costs seconds to start (and a queue wait on Slurm), and CMA-ES's state lives in memory. So the
per-generation rules are thin clients (:mod:`l2lflow.client`) and this process, started by the
first of them, keeps the store open, the optimizer warm and the worker pools up for the whole
run. It holds the results folder's lock (``flock``, released by the kernel if it dies), serves
one step at a time, and shuts down with its pools when the workflow ends (``shutdown``), when
no request came for ``--idle-timeout`` seconds, shortly after its client vanished mid-step
(Ctrl-C or a kill of Snakemake), and within a second of the death of the run it serves (the
Snakemake process, whose pid each step sends as ``run_pid``; watched with a pidfd), whatever
that run was doing. Results reach the store as they arrive, so stopping loses only the
evaluations that were running.

Who may talk to it: its socket lies in a folder only this user can enter
(:func:`l2lflow.client.runtime_dir`), and each connection's peer must run as this user
(``SO_PEERCRED``); the client checks the same of the engine. Whether an engine is alive:
:func:`l2lflow.client.engine_pid`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import logging
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from l2lflow.client import EXIT_LOCKED, ClientError, StoreLock, peer_credentials, socket_path

log = logging.getLogger("l2lflow.engine")

#: another run may take over an idle engine only after this many seconds without requests
LEASE_S = 10.0
#: after a client vanished mid-step, shut down this soon unless a new request arrives
ORPHAN_GRACE_S = 5.0
PROGRESS_INTERVAL_S = 0.25


class Engine:
    def __init__(self, results_dir: Path, idle_timeout: float) -> None:
        self.results_dir = results_dir
        self.idle_timeout = idle_timeout
        self.experiment: Any = None
        self.work_lock = threading.Lock()
        self.stop = threading.Event()
        self.last_activity = time.monotonic()
        self.deadline_override: float | None = None
        self.owner: str | None = None
        #: the process of the owning run (Snakemake) as a pidfd (readable once it exited)
        self.owner_pidfd: int | None = None
        self.owner_pid: int | None = None
        self.busy = False
        #: calls that must run in the main thread (see _on_main_thread), run by serve's loop
        self.main_calls: queue.Queue = queue.Queue()

    # ------------------------------------------------------------------ lifecycle
    def serve(self) -> int:
        lock = StoreLock(self.results_dir)
        try:
            lock.acquire()
        except ClientError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_LOCKED
        try:
            path = socket_path(self.results_dir)
        except ClientError as exc:
            print(str(exc), file=sys.stderr)
            lock.release()
            return 1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # stale socket of a dead engine (we hold the lock, so it is dead)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # only this user may talk to the engine, from the start
        try:
            server.bind(path)
        finally:
            os.umask(old_umask)
        server.listen(16)
        server.settimeout(0.2)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self.stop.set())
        log.info("engine %d serving %s on %s", os.getpid(), self.results_dir, path)
        try:
            while not self.stop.is_set():
                self._run_main_calls()
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    self._check_idle()
                    continue
                pid, uid, _ = peer_credentials(conn)
                if uid != os.getuid():  # only this user may ask for steps (they run as us)
                    log.warning("refused a connection from uid %d (pid %d)", uid, pid)
                    conn.close()
                    continue
                self._check_idle()  # a busy socket must not hide a dead run
                if self.stop.is_set():  # shutting down: the client then waits for the lock
                    conn.close()
                    continue
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        finally:
            lock.mark_stopping()  # a rerun waits for the lock instead of calling it "in use"
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self._watch_owner(None)
            with self.work_lock:  # let a running step flush what it has
                if self.experiment is not None:
                    self.experiment.close()
            lock.release()
            log.info("engine %d stopped", os.getpid())
        return 0

    def _watch_owner(self, pid: int | None) -> None:
        """Watch the run process ``pid`` (``None``: none) instead of the previous one."""
        if pid == self.owner_pid:
            return
        if self.owner_pidfd is not None:
            os.close(self.owner_pidfd)
        self.owner_pid, self.owner_pidfd = None, None
        if pid is None:
            return
        try:
            self.owner_pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.owner_pidfd = None  # already gone: _owner_gone polls the pid
        except OSError:  # no pidfd (old kernel): _owner_gone polls the pid
            self.owner_pidfd = None
        self.owner_pid = pid

    def _owner_gone(self) -> bool:
        """True once the process of the run that owns this engine has exited."""
        if self.owner_pid is None:
            return False
        if self.owner_pidfd is not None:
            readable, _, _ = select.select([self.owner_pidfd], [], [], 0)
            return bool(readable)
        try:
            os.kill(self.owner_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _run_main_calls(self) -> None:
        while True:
            try:
                fn, args, done = self.main_calls.get_nowait()
            except queue.Empty:
                return
            try:
                done.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the thread that asked
                done.set_exception(exc)

    def _on_main_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` run by the main thread (serve's loop, within 0.2 s), for what only the
        main thread may do; raises what it raised."""
        if threading.current_thread() is threading.main_thread():
            return fn(*args)
        done: concurrent.futures.Future = concurrent.futures.Future()
        self.main_calls.put((fn, args, done))
        while True:
            try:
                return done.result(timeout=0.5)
            except concurrent.futures.TimeoutError:
                if self.stop.is_set():
                    raise _ClientGone() from None

    def _check_idle(self) -> None:
        if self.busy:
            return
        if self._owner_gone():
            log.info(
                "the run (pid %d) that used this engine is gone: shutting down", self.owner_pid
            )
            self.stop.set()
            return
        now = time.monotonic()
        if self.deadline_override is not None and now > self.deadline_override:
            log.info("client went away mid-step and none came back: shutting down")
            self.stop.set()
        elif now - self.last_activity > self.idle_timeout:
            log.info("idle for %.0f s: shutting down", self.idle_timeout)
            self.stop.set()

    # ------------------------------------------------------------------ one connection
    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                line = conn.makefile("r", encoding="utf-8").readline()
                if not line:
                    return
                message = json.loads(line)
                self._serve_request(conn, message)
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as exc:  # noqa: BLE001 - reported to the client, engine lives on
                log.error("request failed:\n%s", traceback.format_exc())
                with contextlib.suppress(OSError):
                    self._send(
                        conn,
                        {"type": "result", "ok": False, "error": _one_line(exc, self.results_dir)},
                    )

    def _serve_request(self, conn: socket.socket, message: dict[str, Any]) -> None:
        op = message.get("op")
        run_id = message.get("run_id")
        if op == "ping":
            self._send(conn, {"type": "result", "ok": True, "result": {"pid": os.getpid()}})
            return
        # the owner check comes first, shutdown included: a second run that was refused must not
        # stop the first run's engine from its error handler (Snakemake's onerror)
        if self.owner is not None and run_id != self.owner:
            quiet_for = time.monotonic() - self.last_activity
            # its run vanished mid-step, or its run's process is gone
            orphaned = self.deadline_override is not None or self._owner_gone()
            if self.busy or (quiet_for < LEASE_S and not orphaned):
                self._send(
                    conn,
                    {
                        "type": "result",
                        "ok": False,
                        "error": f"{self.results_dir} is in use by another run (engine pid "
                        f"{os.getpid()}); wait for it to finish or stop it, then run again",
                    },
                )
                return
        if op == "shutdown":
            self.stop.set()
            self._send(conn, {"type": "result", "ok": True, "result": {"stopping": True}})
            return
        run_pid = message.get("run_pid")
        run_pid = run_pid if isinstance(run_pid, int) and run_pid > 0 else None
        if op == "claim":  # a new run announces itself before its first job (see client.claim)
            self.owner = run_id
            self._watch_owner(run_pid)
            self.deadline_override = None
            self.last_activity = time.monotonic()
            if message.get("config_path"):
                self._start_pools_early(message["config_path"])
            self._send(conn, {"type": "result", "ok": True, "result": {"pid": os.getpid()}})
            return
        with self.work_lock:
            if run_id != self.owner:
                self._watch_owner(run_pid)
            self.owner = run_id
            self.busy = True
            self.deadline_override = None
            started = time.perf_counter()
            try:
                result = self._do(conn, op, message)
                log.info(
                    "%s %s: %.1f ms",
                    op,
                    message.get("generation"),
                    1e3 * (time.perf_counter() - started),
                )
            except _ClientGone:
                self.deadline_override = time.monotonic() + ORPHAN_GRACE_S
                log.info("client went away during %s %s", op, message.get("generation"))
                return
            finally:
                self.busy = False
                self.last_activity = time.monotonic()
        self._send(conn, {"type": "result", "ok": True, "result": result})

    def _start_pools_early(self, config_path: str) -> None:
        """Open the experiment and start its worker pools while Snakemake starts its first job.

        The claim comes from Snakemake's ``onstart``; the first step arrives a fraction of a
        second later and the first evaluate a few steps after that, while a cluster takes
        seconds to start. Whatever fails here is reported by the step that needs it.
        """

        def start() -> None:
            try:
                config = self._config(config_path)
                with self.work_lock:
                    self._experiment(config, start_pools=True)
            except Exception as exc:  # noqa: BLE001 - the first step reports it in its own words
                log.info("early start skipped: %s", _one_line(exc, self.results_dir))

        threading.Thread(target=start, name="l2lflow-early-start", daemon=True).start()

    def _do(self, conn: socket.socket, op: str, message: dict[str, Any]) -> dict[str, Any]:
        from l2lflow.execution.dispatch import Interrupted

        config = self._config(message.get("config_path"))
        generation = int(message["generation"])
        exp = self._experiment(config)
        if op == "sample":
            return exp.sample(generation)
        if op == "aggregate":
            return exp.aggregate(generation)
        if op == "meta_test":
            return exp.meta_test()
        if op == "evaluate":
            last = [0.0]

            def progress(p: Any) -> None:
                now = time.monotonic()
                if now - last[0] >= PROGRESS_INTERVAL_S or p.running == 0:
                    last[0] = now
                    with contextlib.suppress(OSError):
                        self._send(conn, {"type": "progress", "progress": p.as_dict()})

            def should_stop() -> bool:
                return self.stop.is_set() or _disconnected(conn)

            try:
                return exp.evaluate(generation, on_progress=progress, should_stop=should_stop)
            except Interrupted:
                raise _ClientGone() from None
        raise ValueError(
            f"unknown step {op!r} (allowed: sample, evaluate, aggregate, meta_test, shutdown)"
        )

    def _config(self, config_path: str | None) -> dict[str, Any]:
        if not config_path:
            raise ValueError("the request names no config file")
        from l2lflow.config import validate_config

        return validate_config(json.loads(Path(config_path).read_text()))

    def _experiment(self, config: dict[str, Any], *, start_pools: bool = False):
        from l2lflow.execution.core import backend_imported, load_backend
        from l2lflow.experiment import Experiment

        backend = config.get("execution", {}).get("backend", "local")
        if not backend_imported(backend):  # the Slurm backend's first import sets a signal handler
            self._on_main_thread(load_backend, backend)

        if Path(config["results"]).resolve() != self.results_dir.resolve():
            raise ValueError(
                f"config's results folder {config['results']} is not this engine's "
                f"{self.results_dir}"
            )
        if self.experiment is None:
            self.experiment = Experiment(config, start_pools=start_pools)
        else:
            self.experiment.update_config(config)
        return self.experiment

    @staticmethod
    def _send(conn: socket.socket, payload: dict[str, Any]) -> None:
        conn.sendall((json.dumps(payload, allow_nan=True) + "\n").encode())


class _ClientGone(Exception):
    pass


def _disconnected(conn: socket.socket) -> bool:
    """True if the client closed its end (a step's client never sends after its request)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _one_line(exc: BaseException, results: Path | None = None) -> str:
    """The user's errors as they are; our own bugs with their type and a pointer to the log."""
    from l2lflow.errors import disk_problem, is_store_damage, is_user_error

    text = (str(exc) or type(exc).__name__).strip()
    disk = disk_problem(exc, results)
    if disk is not None:
        return disk
    if is_user_error(exc):
        return text
    if is_store_damage(exc):
        first = text.splitlines()[0] if text else type(exc).__name__
        return (
            f"the results store does not decode ({type(exc).__name__}: {first}); "
            "`l2lflow check RESULTS` names the damaged files"
        )
    return f"internal error {type(exc).__name__}: {text} (traceback in the engine log)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m l2lflow.engine")
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--idle-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s"
    )
    return Engine(args.results_dir, args.idle_timeout).serve()


if __name__ == "__main__":
    sys.exit(main())
