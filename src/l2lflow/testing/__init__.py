"""Conformance checks for your own optimizers and optimizees, usable from your own tests.

As Optuna ships reusable sampler tests, l2lflow ships the checks its built-ins pass, so that an
optimizer or a model of your own can be held to the same contract before a long run::

    import numpy as np
    from l2lflow.optimizers import Optimizer, register
    from l2lflow.testing import Quality, check_optimizee, check_optimizer

    @register
    class LocalSearch(Optimizer):
        name = "user.local_search"
        default_options = {"step": 0.05}

        def _setup(self):
            self.center, self.best_loss = np.full(self.dimension, 0.5), np.inf

        def _ask(self):  # random numbers only from self.rng, which the base class seeds
            noise = self.rng.normal(size=(self.population_size, self.dimension))
            return self.center + self.options["step"] * noise

        def _tell(self, x, loss):  # loss: lower is better, failed evaluations are inf
            i = int(np.argmin(loss))
            if loss[i] < self.best_loss:
                self.center, self.best_loss = x[i], float(loss[i])

        def _get_state(self):  # plain data (None: restored by replay)
            return {"center": self.center, "best_loss": self.best_loss}

        def _set_state(self, state):
            self.center = np.asarray(state["center"], dtype=np.float64)
            self.best_loss = float(state["best_loss"])

    def test_my_optimizer():
        check_optimizer(LocalSearch, quality={"sphere": Quality(30, 32, threshold=0.5)})

    def test_my_model():
        check_optimizee("my_models:reservoir", space={"tau": {"low": 5, "high": 50}},
                        options={"n_tasks": 2}, bad_params={"tau": -1.0})

Each check raises ``AssertionError`` with a message that names the rule that was violated; each
rule of the optimizer contract is also a function of its own (``check_same_seed_same_asks``,
...) for a test parametrised over them.
"""

from l2lflow.testing.optimizee import OptimizeeReport, check_optimizee
from l2lflow.testing.optimizer import (
    CHECKS,
    FUNCTIONS,
    RESIDUALS,
    NotApplicable,
    OptimizerReport,
    Quality,
    check_asks_in_box,
    check_checkpoint_between_ask_and_tell,
    check_checkpoint_between_generations,
    check_different_seed_different_asks,
    check_failed_fitness,
    check_found_by_name,
    check_maximize_is_minimize_of_negative,
    check_misuse_raises,
    check_optimizer,
    check_quality,
    check_same_seed_same_asks,
    check_state_is_strict_json,
    check_unknown_options_refused,
    config_names,
    make,
    rastrigin,
    restore,
    restores_by_replay,
    rosenbrock,
    run_generations,
    sphere,
)

__all__ = [
    "CHECKS",
    "FUNCTIONS",
    "RESIDUALS",
    "NotApplicable",
    "OptimizeeReport",
    "OptimizerReport",
    "Quality",
    "check_asks_in_box",
    "check_checkpoint_between_ask_and_tell",
    "check_checkpoint_between_generations",
    "check_different_seed_different_asks",
    "check_failed_fitness",
    "check_found_by_name",
    "check_maximize_is_minimize_of_negative",
    "check_misuse_raises",
    "check_optimizee",
    "check_optimizer",
    "check_quality",
    "check_same_seed_same_asks",
    "check_state_is_strict_json",
    "check_unknown_options_refused",
    "config_names",
    "make",
    "rastrigin",
    "restore",
    "restores_by_replay",
    "rosenbrock",
    "run_generations",
    "sphere",
]
