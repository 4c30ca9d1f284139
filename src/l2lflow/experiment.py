"""One experiment's generation loop: ``sample`` → ``evaluate`` → ``aggregate`` per generation.

Each step is idempotent and reads its inputs from the results store, so a run can be cut at any
moment and resumed by running the missing steps again (Snakemake does this from its sentinel
files; :meth:`Experiment.run` does it in one process). The optimizer's state after each
generation is checkpointed in the store as plain JSON; an optimizer whose state is not plain
data (CMA-ES) is restored by replaying the stored generations with the same seed. A warm engine
keeps the optimizer in memory, so neither costs anything in an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from l2lflow import seeds
from l2lflow.execution.core import Executor
from l2lflow.execution.dispatch import (
    Progress,
    individuals_to_evaluate,
    stops_when_all_fail,
)
from l2lflow.execution.work import EvaluationSpec
from l2lflow.optimizers.base import Optimizer, get_optimizer_class
from l2lflow.space import ParameterSpace
from l2lflow.store import DONE, FAILED, PENDING, ResultStore, StoreError

log = logging.getLogger("l2lflow.experiment")


class StepError(RuntimeError):
    """A step asked out of order (e.g. evaluate before sample)."""


class Experiment:
    """The steps of one experiment over its results store (one writer: this object)."""

    def __init__(
        self, config: dict[str, Any], *, pools: Any = None, start_pools: bool = False
    ) -> None:
        """Open (or create) the experiment's store.

        ``start_pools``: start the worker pools (and each worker's sandbox) in a background
        thread right away, while the store opens and the optimizee is described (a subprocess):
        a cluster takes seconds to start and nothing needs it before the first evaluate step.
        A failure to start is kept and raised by the first step that needs the pools.
        """
        self.config = config
        self.results_dir = Path(config["results"])
        self._pools = pools
        self._owns_pools = False
        self._pools_lock = threading.Lock()
        self._pools_error: BaseException | None = None
        opened = threading.Event()
        if start_pools and pools is None:
            self._start_pools_early(opened)
        try:
            self.space = ParameterSpace.from_config(config["space"])
            self.store = ResultStore.open_or_create(self.results_dir, config)
            if self.store.n_aggregated():
                # resuming builds on the last checkpoint: a damaged one refuses before any work
                self.store.checkpoint(self.store.n_aggregated() - 1)
            self._optimizer: Optimizer | None = None
            from l2lflow.optimizees.describe import describe_optimizee

            # never the user's module itself in this process (it runs the TLS cluster; see
            # describe)
            self.optimizee = describe_optimizee(config["optimizee"]["name"])
            if self.optimizee.array_dims:
                self.store.set_array_dims(self.optimizee.array_dims)
        except BaseException:
            opened.set()
            self.close()  # an early start in progress finishes, then its pools close
            raise
        opened.set()

    # ------------------------------------------------------------------ configuration
    def update_config(self, config: dict[str, Any]) -> None:
        """Accept a new config that only changes what may change (generations, execution)."""
        if config != self.config:
            self.store = ResultStore.open_or_create(Path(config["results"]), config)
            self.config = config

    @property
    def generations(self) -> int:
        return int(self.config["generations"])

    def _new_optimizer(self) -> Optimizer:
        cls = get_optimizer_class(self.config["optimizer"]["name"])
        return cls(
            dimension=self.space.dimension,
            population_size=int(self.config["population_size"]),
            seed=seeds.optimizer_seed(int(self.config["seed"])),
            direction=self.config["direction"],
            grid_points=self.space.grid_points,
            expressions=self.space.expressions,
            **self.space.optimizer_options(self.config["optimizer"].get("options", {})),
        )

    def _optimizer_before(self, generation: int) -> Optimizer:
        """The optimizer ready to ask ``generation`` (told every generation before it)."""
        opt = self._optimizer
        if opt is not None and opt.generation == generation and opt._pending is None:
            return opt
        opt = self._new_optimizer()
        if generation > 0:
            ckpt = self.store.checkpoint(generation - 1)
            if ckpt is None:
                raise StepError(f"generation {generation - 1} is not aggregated yet")
            state = ckpt.get("optimizer")
            if state is not None:
                opt.load_state_dict(state)
            else:  # replay: ask and tell the stored generations again
                for g in range(generation):
                    x = opt.ask()
                    opt.tell(x, self.told_values(g), self.told_outputs(opt, g))
        self._optimizer = opt
        return opt

    # ------------------------------------------------------------------ the three steps
    def sample(self, generation: int) -> dict[str, Any]:
        """Ask the optimizer for ``generation`` and store the individuals (status pending)."""
        n = self.store.n_generations
        if generation < n:
            return {"generation": generation, "sampled": False}
        if generation > n:
            raise StepError(f"cannot sample generation {generation}: generation {n} comes first")
        if self.store.n_aggregated() < generation:
            raise StepError(
                f"cannot sample generation {generation}: {generation - 1} not aggregated"
            )
        opt = self._optimizer_before(generation)
        x = opt.ask()
        values = self.space.decode(x)
        pop = int(self.config["population_size"])
        gen_seeds = seeds.evaluation_seeds(int(self.config["seed"]), generation, pop)
        self.store.append_generation(generation, values, gen_seeds)
        return {"generation": generation, "sampled": True}

    def evaluation_spec(self) -> EvaluationSpec:
        evaluation = self.config.get("evaluation", {})
        return EvaluationSpec(
            optimizee=self.config["optimizee"]["name"],
            options=dict(self.config["optimizee"].get("options", {})),
            fitness_key=self.config["optimizee"].get("fitness", "fitness"),
            timeout_s=evaluation.get("timeout_s"),
            threads=int(evaluation.get("threads", 1)),
            experiment_seed=int(self.config["seed"]),
            scratch_root=str((self.results_dir / "scratch").resolve()),
            isolate=bool(evaluation.get("isolate", True)),
            batched=self.optimizee.batched,
            objectives=tuple((name, factor) for name, factor in self.objective_factors()),
        )

    def objective_factors(self) -> list[tuple[str, float]]:
        """(metric, weight × ±1) per configured objective, oriented like ``direction``."""
        out = []
        for obj in self.config["optimizee"].get("objectives", []):
            sign = (
                1.0
                if obj.get("direction", self.config["direction"]) == self.config["direction"]
                else -1.0
            )
            out.append((obj["name"], sign * float(obj.get("weight", 1.0))))
        return out

    def told_values(self, generation: int) -> np.ndarray:
        """What the optimizer is told for a generation: fitness, or one column per objective
        (each oriented like ``direction``; failed individuals get the failure fitness)."""
        fitness = self.store.fitness(generation)
        opt_cls = get_optimizer_class(self.config["optimizer"]["name"])
        objectives = self.config["optimizee"].get("objectives")
        if not (opt_cls.multi_objective and objectives):
            return fitness
        status = self.store.status(generation)
        columns = []
        for name, factor in self.objective_factors():
            values = np.asarray(self.store.array(f"metric_{name}")[generation, :], dtype=np.float64)
            sign = 1.0 if factor >= 0 else -1.0
            columns.append(np.where(status == DONE, sign * values, fitness))
        return np.stack(columns, axis=1)

    def told_outputs(self, opt: Optimizer, generation: int) -> np.ndarray | None:
        """The result array an optimizer with ``uses_outputs`` (EnKF) is told, one row per
        individual (NaN rows for failed ones); ``None`` for every other optimizer."""
        key = opt.outputs_key if opt.uses_outputs else None
        if key is None:
            return None
        pop = int(self.config["population_size"])
        if not self.store.has(key):
            if np.any(self.store.status(generation) == DONE):
                raise StoreError(
                    f"optimizer {opt.name!r} needs each individual's outputs, but the optimizee "
                    f"returned no array {key!r} (set optimizer.options.outputs to its name)"
                )
            return np.full((pop, 1), np.nan)  # nothing succeeded yet: all rows failed
        values = np.asarray(self.store.array(key)[generation], dtype=np.float64).reshape(pop, -1)
        # a failed individual may have stored outputs (a NaN fitness beside finite outputs)
        values[self.store.status(generation) != DONE] = np.nan
        return values

    def pool_name(self) -> str:
        """Which worker pool evaluates this optimizee: ``gpu`` or ``cpu``.

        ``evaluation.device`` decides: ``gpu``/``cpu`` force it; ``auto`` sends optimizees that
        need a GPU to the GPU pool, and those that merely prefer one there when the run has one.
        """
        device = self.config.get("evaluation", {}).get("device", "auto")
        if device in ("gpu", "cpu"):
            return device
        if self.optimizee.needs_gpu:
            return "gpu"
        if self.optimizee.prefers_gpu and "gpu" in self.pools().clients:
            return "gpu"
        return "cpu"

    def pools(self) -> Executor:
        """The run's :class:`~l2lflow.execution.Executor`: its worker pools, started on first
        use (or early: see ``start_pools``)."""
        with self._pools_lock:  # an early start in progress is waited for, not repeated
            if self._pools is None:
                if self._pools_error is not None:
                    error, self._pools_error = self._pools_error, None
                    raise error  # the early start failed: the first step that needs it says why
                from l2lflow.execution import start_pools

                (self.results_dir / "dask").mkdir(parents=True, exist_ok=True)
                self._pools = start_pools(
                    self.config.get("execution", {}),
                    local_directory=str(self.results_dir / "dask"),
                )
                self._owns_pools = True
            return self._pools

    def _start_pools_early(self, opened: threading.Event) -> None:
        """Start the pools in a thread; once the experiment is open (``opened``), warm the
        workers' sandboxes up: each starts its sandbox and imports the optimizee there."""
        from l2lflow.execution.core import load_backend

        try:  # here, not in the thread: a backend's first import may need this (main) thread
            load_backend(self.config.get("execution", {}).get("backend", "local"))
        except Exception as exc:  # noqa: BLE001 - kept for the step that needs the pools
            self._pools_error = exc
            return

        def start() -> None:
            try:
                pools = self.pools()
                opened.wait()
                if not hasattr(self, "optimizee"):  # the experiment failed to open
                    return
                spec = self.evaluation_spec()
                if spec.isolate:
                    from l2lflow.execution.sandbox import warm_up

                    for name in pools.clients:
                        pools.client(name).run(warm_up, spec)
            except BaseException as exc:  # noqa: BLE001 - kept for the step that needs the pools
                with self._pools_lock:
                    if self._pools is None:
                        self._pools_error = exc
                log.info("early start of the worker pools: %s", exc)

        threading.Thread(target=start, name="l2lflow-pools-start", daemon=True).start()

    def evaluate(
        self,
        generation: int,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Evaluate the pending individuals of ``generation`` on the worker pool."""
        if generation >= self.store.n_generations:
            raise StepError(f"cannot evaluate generation {generation}: it is not sampled yet")
        if not individuals_to_evaluate(self.store, generation, self.config):
            return {"generation": generation, "evaluated": 0}
        self.store.parameters(generation)  # a lost parameter chunk refuses before a cluster starts
        progress = self.pools().evaluate_generation(
            self.pool_name(),
            self.store,
            generation,
            self.evaluation_spec(),
            self.config,
            task_seed=seeds.task_seed(int(self.config["seed"]), generation),
            on_progress=self._with_workers(on_progress),
            should_stop=should_stop,
        )
        return {"generation": generation, **progress.as_dict()}

    def _with_workers(
        self, on_progress: Callable[[Progress], None] | None
    ) -> Callable[[Progress], None] | None:
        """``on_progress`` with the connected workers per pool filled in (asked at most once a
        second: each count is a round trip to a scheduler)."""
        if on_progress is None:
            return None
        asked = [-math.inf]

        def show(progress: Progress) -> None:
            now = time.monotonic()
            if now - asked[0] >= 1.0 or not progress.workers:
                asked[0] = now
                pools = self.pools()
                with contextlib.suppress(Exception):  # a scheduler mid-restart: keep the last
                    progress.workers = {name: pools.worker_count(name) for name in pools.clients}
            on_progress(progress)

        return show

    def aggregate(self, generation: int) -> dict[str, Any]:
        """Tell the optimizer the generation's fitness and checkpoint its state in the store."""
        if generation >= self.store.n_generations:
            raise StepError(f"cannot aggregate generation {generation}: it is not sampled yet")
        status = self.store.status(generation)
        if np.any(status == PENDING):
            raise StepError(
                f"cannot aggregate generation {generation}: "
                f"{int(np.sum(status == PENDING))} individuals are not evaluated yet"
            )
        if self.store.n_aggregated() > generation:
            if self.store.checkpoint(generation) is not None:
                return {"generation": generation, **self.store.checkpoint(generation)["summary"]}
        if np.all(status == FAILED) and stops_when_all_fail(self.config):
            raise StepError(
                f"cannot aggregate generation {generation}: every evaluation failed "
                "(evaluation.on_all_failed: stop); evaluate it again after fixing the optimizee"
            )
        opt = self._optimizer
        if opt is not None and opt.generation == generation and opt._pending is not None:
            x = opt._pending.copy()  # warm: the ask of this generation's sample step
        else:
            opt = self._optimizer_before(generation)
            x = opt.ask()
        stored = self.store.parameters(generation)
        asked = self.space.decode(x)
        for name in self.space.names:
            if not np.array_equal(asked[name], stored[name]):
                raise StoreError(
                    f"{self.store.path}: the parameters stored for generation {generation} "
                    f"({name}) differ from what the optimizer proposes again: the store was "
                    "modified or the optimizer is not deterministic"
                )
        fitness = self.store.fitness(generation)
        told = self.told_values(generation)
        opt.tell(x, told, self.told_outputs(opt, generation))
        if self.config["optimizee"].get("objectives"):
            self.store.write_objectives(generation, self._objective_matrix(generation, status))
        summary = summarise(fitness, status, self.config["direction"])
        self.store.save_checkpoint(generation, opt.state_dict(), summary)
        return {"generation": generation, **summary}

    def _objective_matrix(self, generation: int, status: np.ndarray) -> dict[str, Any]:
        """Every objective of a generation as stored values, and the Pareto rank per individual."""
        from l2lflow.optimizers.nsga2 import pareto_ranks

        names = [o["name"] for o in self.config["optimizee"]["objectives"]]
        values = np.stack(
            [
                np.asarray(self.store.array(f"metric_{n}")[generation, :], dtype=np.float64)
                for n in names
            ],
            axis=1,
        )
        loss = np.empty_like(values)
        for j, obj in enumerate(self.config["optimizee"]["objectives"]):
            sign = 1.0 if obj.get("direction", self.config["direction"]) == "minimize" else -1.0
            loss[:, j] = sign * values[:, j]
        ok = (status == DONE) & np.all(np.isfinite(loss), axis=1)
        ranks = np.full(values.shape[0], -1, dtype=np.int64)
        if ok.any():
            ranks[ok] = pareto_ranks(loss[ok])
        return {"names": names, "values": values, "pareto_rank": ranks}

    # ------------------------------------------------------------------ after the last generation
    @property
    def meta_test_config(self) -> dict[str, Any] | None:
        return self.config["optimizee"].get("meta_test")

    def meta_test(self) -> dict[str, Any]:
        """Re-evaluate the best individuals on held-out tasks never seen during optimisation.

        The ``top_k`` best distinct individuals of the whole run are evaluated with the
        meta-test task seed (disjoint from every generation's) and their scores stored on the
        ``meta_test`` dimension (rank 0 = the best during optimisation).
        """
        settings = self.meta_test_config
        if settings is None:
            return {"meta_test": 0}
        n = self.store.n_aggregated()
        if n < self.generations:
            raise StepError(
                f"cannot meta-test: only {n} of {self.generations} generations finished"
            )
        ranked = self.store.ranked_individuals(self.config["direction"])
        chosen = ranked[: int(settings.get("top_k", 3))]
        written = self.store.meta_test_scores(chosen)
        if written is not None:  # rerun of a finished step (e.g. killed before Snakemake knew)
            return {"meta_test": len(written), "scores": written}
        meta_seed = seeds.meta_test_seed(int(self.config["seed"]))
        # rank 0 = the best during optimisation; each gets its own held-out seed
        results = self.pools().meta_test(
            self.pool_name(),
            self.store,
            chosen,
            self.evaluation_spec(),
            self.config,
            task_seed=meta_seed,
            seeds=[seeds.evaluation_seed(meta_seed, g, i) for g, i in chosen],
        )
        self.store.write_meta_test(results)
        scores = [r["fitness"] if r["ok"] else None for r in results]
        return {"meta_test": len(results), "scores": scores}

    # ------------------------------------------------------------------ all in one process
    def run(
        self,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_step: Callable[[str, int, dict[str, Any] | None], None] | None = None,
    ) -> None:
        """Run every missing step up to ``generations`` (resumes where the store stands).

        ``on_step(step, generation, result)`` is called before each step (``result`` None) and
        after it (its result), so that a display can follow the run as it follows Snakemake's.
        """

        def step(name: str, generation: int, do: Callable[[], dict[str, Any]]) -> None:
            if on_step is not None:
                on_step(name, generation, None)
            result = do()
            if on_step is not None:
                on_step(name, generation, result)

        try:
            for g in range(self.store.n_aggregated(), self.generations):
                step("sample", g, lambda g=g: self.sample(g))
                step("evaluate", g, lambda g=g: self.evaluate(g, on_progress=on_progress))
                step("aggregate", g, lambda g=g: self.aggregate(g))
            if self.meta_test_config is not None:
                step("meta_test", self.generations - 1, self.meta_test)
        finally:
            self.close()

    def close(self) -> None:
        with self._pools_lock:  # a start in progress finishes first, then its pools close
            if self._owns_pools and self._pools is not None:
                self._pools.close()
                self._pools = None
                self._owns_pools = False


def summarise(fitness: np.ndarray, status: np.ndarray, direction: str) -> dict[str, Any]:
    """Best/mean/worst fitness of the successful evaluations of one generation."""
    ok = fitness[(status == DONE) & np.isfinite(fitness)]
    out: dict[str, Any] = {
        "n_done": int(np.sum(status == DONE)),
        "n_failed": int(np.sum(status != DONE)),
    }
    if ok.size:
        best = ok.min() if direction == "minimize" else ok.max()
        best_i = int(np.flatnonzero(fitness == best)[0])
        out.update(
            best_fitness=float(best),
            best_individual=best_i,
            mean_fitness=float(ok.mean()),
            median_fitness=float(np.median(ok)),
        )
    else:
        out.update(best_fitness=None, best_individual=None, mean_fitness=None, median_fitness=None)
    for k, v in list(out.items()):
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
    return out
