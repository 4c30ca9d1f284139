"""Snakemake logger plugin ``l2lflow``: an l2lflow run as people watch it.

``snakemake --logger l2lflow`` (on by default through the workflow profile ``profiles/default``
and the site profiles). Snakemake 9 finds logger plugins by module name
(``snakemake_logger_plugin_<name>``), so this package ships inside the l2lflow distribution.

What it does with Snakemake's log records:

* the l2lflow step jobs (sample / evaluate / aggregate / meta_test) drive
  :class:`l2lflow.display.RunDisplay`: a live view on a terminal, one timestamped line per
  generation and per event elsewhere, and a closing summary;
* Snakemake's own job blocks, shell commands, job statistics and bookkeeping lines are folded
  away (``snakemake --logger none`` brings them back, and a dry run shows them as usual);
* errors and warnings are shown in full, each failed step with what it wrote to stderr.

The steps learn of the display through ``L2LFLOW_DISPLAY_DIR`` (see
:mod:`l2lflow.progress_channel`), set here before the first job starts: they write the engine's
progress to a small file in that folder instead of drawing on the terminal themselves.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent

__all__ = ["LogHandler"]

#: the workflow's step rules (workflow/rules/generation.smk)
STEP_RULES = ("sample", "evaluate", "aggregate", "meta_test")
#: Snakemake's bookkeeping lines that say nothing to someone watching an l2lflow run
FOLDED = re.compile(
    r"^\s*(Building DAG of jobs|Using shell:|Provided cores:|Rules claiming more threads|"
    r"Select jobs to execute|Execute \d+ jobs|Job stats:|Complete log|Assuming unrestricted|"
    r"host:|Conda environments:|Singularity containers:|Apptainer|Storing output|Touching output|"
    r"Finished jobid|Finished job|localrule|\[.*\d{4}\]$|Waiting at most|Removing output files|"
    r"Shutting down, this might take some time|Exiting because a job execution failed|"
    r"Resources before job selection|Ready jobs|Selected jobs|Using workflow specific profile|"
    r"Select jobs|Will exit after finishing currently running jobs|Cancelling snakemake|"
    r"Elapsed time:)"
)
FOLDED_EVENTS = {
    LogEvent.RUN_INFO,
    LogEvent.SHELLCMD,
    LogEvent.JOB_STARTED,
    LogEvent.WORKFLOW_STARTED,
    LogEvent.RESOURCES_INFO,
    LogEvent.RULEGRAPH,
    LogEvent.DEBUG_DAG,
    LogEvent.GROUP_INFO,
}


ERROR_EVENTS = {LogEvent.JOB_ERROR, LogEvent.GROUP_ERROR, LogEvent.ERROR}


class LogHandler(LogHandlerBase):
    """Snakemake's log records -> :class:`l2lflow.display.RunDisplay`."""

    def __post_init__(self) -> None:
        from snakemake.logging import DefaultFilter, DefaultFormatter

        from l2lflow.progress_channel import ENV

        s = self.common_settings
        self.stream = sys.stdout if getattr(s, "stdout", False) else sys.stderr
        self.formatter_ = DefaultFormatter(s.quiet, s.show_failed_logs)
        self.filter_ = DefaultFilter(s.quiet, s.debug_dag, s.verbose, s.dryrun, s.printshellcmds)
        # a dry run, --verbose or --debug-dag: Snakemake's own output is what people want
        self.passthrough = bool(s.dryrun or s.verbose or s.debug_dag)
        self.folder = Path(tempfile.mkdtemp(prefix="l2lflow-display-"))
        os.environ[ENV] = str(self.folder)
        self.steps_log = self.folder / "steps.log"
        self.steps_log_read = 0
        self.display: Any = None
        self.jobs: dict[int, tuple[str, int, str | None]] = {}

    # ------------------------------------------------------------------ the plugin interface
    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emit(record)
        except Exception:  # noqa: BLE001 - a display bug must never stop the workflow
            self.handleError(record)

    def close(self) -> None:
        try:
            self._show_steps_log()
            if self.display is not None:
                self.display.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            super().close()

    # ------------------------------------------------------------------ records
    def _emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if self.passthrough:
            if self.filter_.filter(record):
                self._print(self.formatter_.format(record))
            return
        if event == LogEvent.JOB_INFO:
            self._job_started(record)
        elif event == LogEvent.JOB_FINISHED:
            self._job_finished(int(record.job_id))
        elif event == LogEvent.PROGRESS:
            if self.display is not None:
                self.display.snakemake_progress(int(record.done), int(record.total))
        elif event in FOLDED_EVENTS:
            return
        elif event in ERROR_EVENTS or record.levelno >= logging.ERROR:
            self._show_steps_log()  # the failed step's own words first, then Snakemake's
            self._error(self.formatter_.format(record))
        elif record.levelno >= logging.WARNING:
            self._error(self.formatter_.format(record), style="yellow")
        elif record.levelno >= logging.INFO:
            text = (self.formatter_.format(record) or "").strip()
            if text and not FOLDED.match(text):
                self._event(text)

    def _job_started(self, record: logging.LogRecord) -> None:
        rule = record.rule_name
        outputs = list(getattr(record, "output", None) or [])
        if rule not in STEP_RULES:
            if outputs:  # e.g. figures; `all` (the default target) only collects
                self._event(f"rule {rule}: {', '.join(outputs[:3])}{' ...' * (len(outputs) > 3)}")
            return
        sentinel = Path(outputs[0])
        match = re.match(r"(\d+)", sentinel.name.split(".")[0]) or re.search(
            r"after_(\d+)", sentinel.name
        )
        generation = int(match.group(1)) if match else 0
        self.jobs[int(record.jobid)] = (rule, generation, str(sentinel))
        display = self._display()
        display.attach(sentinel.parent.parent)
        display.step(rule, generation, None)

    def _job_finished(self, jobid: int) -> None:
        job = self.jobs.pop(jobid, None)
        if job is None or self.display is None:
            return
        rule, generation, sentinel = job
        try:
            import json

            result = json.loads(Path(sentinel).read_text()) if sentinel else {}
        except (OSError, ValueError):
            result = {}
        self.display.step(rule, generation, result)

    # ------------------------------------------------------------------ output
    def _display(self):
        if self.display is None:
            from l2lflow.display import RunDisplay

            self.display = RunDisplay(self.stream, rerun=_rerun_args(sys.argv[1:]))
            self.display.follow_progress_file(self.folder)
        return self.display

    def _print(self, text: str | None) -> None:
        if text:
            print(text, file=self.stream, flush=True)

    def _event(self, text: str) -> None:
        if self.display is not None:
            self.display.line(text)
        else:
            self._print(text)

    def _error(self, text: str | None, *, style: str = "red") -> None:
        if not text:
            return
        if self.display is not None:
            self.display.block(text, style=style)
        else:
            self._print(text)

    def _show_steps_log(self) -> None:
        """What the steps wrote to stderr since last shown (their errors, in full)."""
        try:
            with open(self.steps_log, encoding="utf-8", errors="replace") as f:
                f.seek(self.steps_log_read)
                text = f.read()
                self.steps_log_read = f.tell()
        except OSError:
            return
        if text.strip():
            self._error(text)


def _rerun_args(argv: list[str]) -> str:
    """The options of this Snakemake command that name the experiment (Snakefile, folder,
    config files, profile), for the commands the closing summary suggests."""
    keep = {"-s", "--snakefile", "-d", "--directory", "--configfile", "--configfiles", "--profile"}
    out: list[str] = []
    taking = False
    for arg in argv:
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            taking = name in keep and "=" not in arg
            if name in keep:
                out.append(arg)
        elif taking:
            out.append(arg)
    return " ".join(out)
