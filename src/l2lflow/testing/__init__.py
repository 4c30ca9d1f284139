"""Conformance checks for your own optimizees (and optimizers), usable from your own tests.

As Optuna ships reusable sampler tests, l2lflow ships the checks its built-ins pass, so that a
model of your own can be held to the same contract before a long run::

    from l2lflow.testing import check_optimizee

    def test_my_model():
        check_optimizee("my_models:reservoir", space={"tau": {"low": 5, "high": 50}},
                        options={"n_tasks": 2}, bad_params={"tau": -1.0})

Each check raises ``AssertionError`` with a message that says what was violated.
"""

from l2lflow.testing.optimizee import OptimizeeReport, check_optimizee

__all__ = ["OptimizeeReport", "check_optimizee"]
