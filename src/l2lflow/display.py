"""What people watching a run see: a live view on a terminal, plain lines anywhere else.

One :class:`RunDisplay` serves both ways of running an experiment: the Snakemake logger plugin
(:mod:`snakemake_logger_plugin_l2lflow`, on by default through ``profiles/default``) feeds it
Snakemake's job events plus the progress file the steps write (:mod:`l2lflow.progress_channel`),
and ``l2lflow run`` feeds it the experiment's own step and progress callbacks. Why one class:
both show the same numbers, and a batch log of either reads the same.

* On a terminal (rich): a whole-run bar with an ETA from the generations measured so far, the
  current generation's done / failed / running of N, best and mean so far, the workers connected
  per pool and the failures counted by reason, redrawn in place; one line per finished
  generation stays above it.
* Elsewhere (Slurm batch logs, CI, a pipe): plain timestamped lines, one per generation and per
  event, no ANSI codes.
* At the end: a closing summary (best fitness and parameters or the Pareto front, meta-test,
  failures, wall time, the store, the next commands).
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

#: redraws per second of the live view
REFRESH_PER_S = 4


@dataclass
class _Generation:
    generation: int
    started: float
    total: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    best: float = math.nan
    mean: float = math.nan
    reasons: dict[str, int] = field(default_factory=dict)
    evaluated: bool = False


def duration(seconds: float) -> str:
    """``9.8 s``, ``42 s``, ``3:07``, ``1:02:03``; ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}:{m:02d}:{s:02d}"
    return f"{m}:{s:02d}" if m else f"{s} s"


def number(value: Any) -> str:
    """A fitness or parameter value as people read it (4 significant digits)."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "-"
    return str(value)


class RunDisplay:
    """The live view (terminal) or plain lines (elsewhere) of one run; thread-safe."""

    def __init__(
        self, stream: TextIO | None = None, *, tty: bool | None = None, rerun: str | None = None
    ) -> None:
        """``rerun``: the options that name the experiment in a Snakemake command (None: the run
        is ``l2lflow run``), for the commands the closing summary suggests."""
        from rich.console import Console

        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(self.stream.isatty()) if tty is None else tty
        self.console = Console(
            file=self.stream,
            force_terminal=self.tty,
            no_color=not self.tty,
            highlight=False,
            soft_wrap=not self.tty,
            width=None if self.tty else 10_000,
        )
        self.lock = threading.RLock()
        self.started = time.time()
        self.results: Path | None = None
        self.config: dict[str, Any] = {}
        self.first_generation: int | None = None
        self.aggregated = 0
        self.generations: dict[int, _Generation] = {}
        self.durations: list[float] = []
        self.best: tuple[float, int] | None = None
        self.workers: dict[str, int] = {}
        self.reasons: Counter[str] = Counter()
        self.meta_test: dict[str, Any] | None = None
        self.progress_source: Path | None = None
        self.snakemake_steps: tuple[int, int] | None = None
        self.live: Any = None
        self.closed = False
        self.rerun = rerun

    # ------------------------------------------------------------------ what happens
    def attach(self, results: str | Path, config: dict[str, Any] | None = None) -> None:
        """The run's results folder (its ``config.json`` is read when ``config`` is None)."""
        with self.lock:
            if self.results is not None:
                return
            self.results = Path(results)
            if config is None:
                try:
                    config = json.loads((self.results / "config.json").read_text())
                except (OSError, ValueError):
                    config = {}
            self.config = config
            c = config
            opt = (c.get("optimizer") or {}).get("name", "?")
            optimizee = c.get("optimizee") or {}
            objective = (
                " + ".join(o["name"] for o in optimizee["objectives"])
                if optimizee.get("objectives")
                else optimizee.get("fitness", "fitness")
            )
            self.line(
                f"l2lflow {c.get('name', self.results.name)}: {c.get('generations', '?')} "
                f"generations × {c.get('population_size', '?')}, {opt} on "
                f"{optimizee.get('name', '?')}, {c.get('direction', 'minimize')} {objective}; "
                f"results in {self.results}"
            )
            if self.tty and self.live is None:
                from rich.live import Live

                self.live = Live(
                    get_renderable=self._render,
                    console=self.console,
                    refresh_per_second=REFRESH_PER_S,
                    transient=True,
                    redirect_stdout=False,
                    redirect_stderr=False,
                )
                self.live.start()

    def step(self, op: str, generation: int, result: dict[str, Any] | None) -> None:
        """A step starts (``result`` None) or finished (its result dict, maybe empty)."""
        with self.lock:
            if op == "meta_test":
                if result is not None:
                    self._meta_test_finished(result)
                return
            if self.first_generation is None:
                self.first_generation = generation
            gen = self.generations.get(generation)
            if gen is None:
                total = int(self.config.get("population_size", 0) or 0)
                gen = self.generations[generation] = _Generation(
                    generation, time.monotonic(), total=total
                )
            if result is None:
                return
            if op == "evaluate":
                if "total" in result:  # the evaluation's final counts (not: nothing to do)
                    self.progress({**result, "running": 0})
                gen.evaluated = True
            elif op == "aggregate":
                self._generation_finished(gen, result)

    def progress(self, p: dict[str, Any]) -> None:
        """The engine's progress of the generation being evaluated (see ``Progress.as_dict``)."""
        with self.lock:
            g = int(p["generation"])
            gen = self.generations.get(g)
            if gen is None:
                self.step("evaluate", g, None)
                gen = self.generations[g]
            gen.total = int(p.get("total", gen.total))
            gen.done, gen.failed = int(p.get("done", 0)), int(p.get("failed", 0))
            gen.running = int(p.get("running", 0))
            gen.best = float(p.get("best", math.nan) if p.get("best") is not None else math.nan)
            gen.mean = float(p.get("mean", math.nan) if p.get("mean") is not None else math.nan)
            gen.reasons = dict(p.get("reasons") or {})
            workers = dict(p.get("workers") or {})
            if workers and workers != self.workers:
                if not self.tty and self.workers:  # the first count is in the generation line
                    self.line("workers connected: " + _pools(workers))
                self.workers = workers

    def follow_progress_file(self, folder: Path) -> None:
        """Read progress from a steps' progress file (see :mod:`l2lflow.progress_channel`)."""
        self.progress_source = folder

    def snakemake_progress(self, done: int, total: int) -> None:
        self.snakemake_steps = (done, total)

    def line(self, text: str, *, style: str | None = None) -> None:
        """One persistent line (timestamped when not on a terminal)."""
        with self.lock:
            if self.tty:
                self.console.print(text, style=style, markup=False)
            else:
                self.console.print(f"{time.strftime('%H:%M:%S')} {text}", markup=False)

    def block(self, text: str, *, style: str | None = "red") -> None:
        """Text shown in full as it is (Snakemake's errors, a failed step's own output)."""
        with self.lock:
            self.console.print(text.rstrip("\n"), style=style if self.tty else None, markup=False)

    def close(self, *, summary: bool = True) -> None:
        """Stop the live view and print the closing summary (once; none: ``summary=False``)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if self.live is not None:
                self.live.stop()
                self.live = None
            if self.results is None or not summary:
                return
            try:
                text = self.summary()
            except Exception as exc:  # noqa: BLE001 - the store may be damaged or absent
                text = f"(no summary: {type(exc).__name__}: {exc})"
            head, _, rest = text.partition("\n")
            self.console.print(head, markup=False, style="bold" if self.tty else None)
            self.console.print(rest, markup=False)

    # ------------------------------------------------------------------ internals
    def _read_progress_file(self) -> None:
        if self.progress_source is None:
            return
        from l2lflow.progress_channel import read_progress

        p = read_progress(self.progress_source)
        if p is not None and (self.results is None or p.get("results") == str(self.results)):
            gen = self.generations.get(int(p["generation"]))
            if gen is None or not gen.evaluated or p.get("running", 1) == 0:
                self.progress(p)

    def _maximize(self) -> bool:
        return self.config.get("direction", "minimize") == "maximize"

    def _generation_finished(self, gen: _Generation, result: dict[str, Any]) -> None:
        self.aggregated += 1
        spent = time.monotonic() - gen.started
        if gen.evaluated:  # a generation that only aggregated (resumed) says nothing of speed
            self.durations.append(spent)
        best, mean = result.get("best_fitness"), result.get("mean_fitness")
        if best is not None:
            gen.best = float(best)
            better = self.best is None or (
                best > self.best[0] if self._maximize() else best < self.best[0]
            )
            if better:
                self.best = (float(best), gen.generation)
        if mean is not None:
            gen.mean = float(mean)
        if "n_done" in result:
            gen.done = int(result["n_done"])
            gen.failed = int(result.get("n_failed", 0))
        self.reasons.update(gen.reasons)
        n = self.config.get("generations", "?")
        text = (
            f"[{(self.first_generation or 0) + self.aggregated}/{n}] generation {gen.generation}: "
            f"{gen.done} done, {gen.failed} failed"
            + (f" ({_reasons(gen.reasons)})" if gen.reasons else "")
            + f" in {duration(spent)}; best {number(gen.best)}, mean {number(gen.mean)}"
        )
        if self.best is not None and self.best[1] != gen.generation:
            text += f" (best so far {number(self.best[0])}, generation {self.best[1]})"
        if self.workers and len(self.durations) <= 1:
            text += f"; workers {_pools(self.workers)}"
        if self._remaining() > 0:
            text += f"; ETA {duration(self.eta())}"
        self.line(text)

    def _meta_test_finished(self, result: dict[str, Any]) -> None:
        self.meta_test = result
        scores = ", ".join(number(s) if s is not None else "failed" for s in result["scores"])
        self.line(f"meta-test: the {len(result['scores'])} best on held-out tasks: {scores}")

    def _done_generations(self) -> float:
        """Generations finished (before this run too) plus the current one's finished part."""
        done = (self.first_generation or 0) + self.aggregated
        current = self.generations.get(done)
        if current is not None and current.total:
            done += (current.done + current.failed) / current.total
        return done

    def _remaining(self) -> float:
        target = self.config.get("generations")
        return max(float(target) - self._done_generations(), 0.0) if target else math.nan

    def eta(self) -> float:
        """Seconds left: the mean measured generation × the generations left; before the
        first generation ends, extrapolated from the current one's finished fraction."""
        remaining = self._remaining()
        if not math.isfinite(remaining):
            return math.nan
        if self.durations:  # the first one includes the start of the worker pools
            measured = self.durations[1:] or self.durations
            return remaining * float(sum(measured) / len(measured))
        current = self.generations.get((self.first_generation or 0) + self.aggregated)
        if current is None or not current.total:
            return math.nan
        fraction = (current.done + current.failed) / current.total
        if fraction <= 0:
            return math.nan
        per_generation = (time.monotonic() - current.started) / fraction
        return remaining * per_generation

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            self._read_progress_file()
            target = float(self.config.get("generations") or 1)
            done = self._done_generations()
            elapsed = time.time() - self.started
            grid = Table.grid(padding=(0, 1))
            grid.add_column(justify="right", style="bold")
            grid.add_column(width=24)
            grid.add_column()
            grid.add_row(
                "run",
                ProgressBar(total=target, completed=min(done, target)),
                f"{int(done)}/{int(target)} generations · {duration(elapsed)} · "
                f"ETA {duration(self.eta())}",
            )
            current = self.generations.get((self.first_generation or 0) + self.aggregated)
            if current is not None:
                total = max(current.total, 1)
                grid.add_row(
                    f"gen {current.generation}",
                    ProgressBar(total=total, completed=current.done + current.failed),
                    f"{current.done} done · {current.failed} failed · {current.running} "
                    f"running of {current.total}",
                )
            facts = []
            if current is not None and math.isfinite(current.best):
                facts.append(
                    f"this generation: best {number(current.best)}, mean {number(current.mean)}"
                )
            if self.best is not None:
                facts.append(f"best so far {number(self.best[0])} (gen {self.best[1]})")
            if self.workers:
                facts.append(f"workers {_pools(self.workers)}")
            failures = self.reasons + Counter(current.reasons if current else {})
            facts.append(f"failures: {_reasons(failures)}" if failures else "no failures")
            return Group(grid, Text("  " + " · ".join(facts), style="dim"))

    # ------------------------------------------------------------------ the closing summary
    def summary(self) -> str:
        """The closing summary, from the store (what the run left there)."""
        from l2lflow.status import run_status

        assert self.results is not None
        st = run_status(self.results)
        wall = time.time() - self.started
        name = st.name
        state = (
            "finished"
            if st.finished
            else f"stopped after {st.n_aggregated} of {st.generations} generations"
        )
        steps = ""
        if self.snakemake_steps is not None:
            steps = f", {self.snakemake_steps[0]} of {self.snakemake_steps[1]} steps done"
        lines = [
            f"── l2lflow {name}: {state} ({st.generations} generations × "
            f"{st.population_size}) in {duration(wall)} wall time{steps} ──"
        ]
        lines += result_lines(st, self.config, reasons=self.reasons, results=self.results)
        lines.append(f"store: {self.results / 'results.zarr'}")
        if not st.finished:
            lines.append("resume: run the same command again (finished evaluations are kept)")
        lines.append(f"next: l2lflow status {self.results}")
        lines.append(f"      l2lflow plot {self.results}")
        if self.rerun is not None:
            opts = f"{self.rerun} " if self.rerun else ""
            lines.append(
                f"      snakemake {opts}--cores 1 figures && "
                f"snakemake {opts}--report report.html figures"
            )
        return "\n".join(lines)


def result_lines(
    st: Any, config: dict[str, Any], *, reasons: dict[str, int] | None = None, results: Any = None
) -> list[str]:
    """What a run found, for people: the best fitness and its parameters with their units (or
    the Pareto front), the meta-test against chance, the failures. Shared by the closing
    summary and the report's landing text."""
    from l2lflow.plots import chance_level

    lines = []
    if st.front is not None:
        f = st.front
        lines.append(
            f"Pareto front: {f['size']} individuals, hypervolume {number(f['hypervolume'])} "
            f"(reference {', '.join(number(r) for r in f['reference'])}; objectives "
            f"{', '.join(f['objectives'])})"
        )
    elif st.best is not None:
        b = st.best
        lines.append(
            f"best {st.fitness_name} {number(b['fitness'])} (generation {b['generation']}, "
            f"individual {b['individual']}):"
        )
        units = {k: (v or {}).get("unit") for k, v in (config.get("space") or {}).items()}
        lines.append(
            "  "
            + ", ".join(
                f"{k} {number(v)}{' ' + units[k] if units.get(k) else ''}"
                for k, v in b["params"].items()
            )
        )
    if st.meta_test:
        scores = ", ".join(
            number(m["fitness"]) if m["status"] == 1 else "failed" for m in st.meta_test
        )
        chance = chance_level(config)
        lines.append(
            f"meta-test of the {len(st.meta_test)} best on held-out tasks: {scores}"
            + (f" (chance {number(chance)})" if chance is not None else "")
        )
    failed = sum(r.failed for r in st.rows)
    lines.append(
        f"failures: {failed} of {sum(r.done + r.failed for r in st.rows)} evaluations"
        + (f" ({_reasons(reasons)})" if reasons else "")
        + (f"; `l2lflow status {results}` and ds.l2l.failures() say why" if failed else "")
    )
    return lines


def _pools(workers: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in workers.items())


def _reasons(reasons: dict[str, int] | Counter) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
