"""The GPU example configs validate: the laptop one alone, the JUWELS Booster one merged with the
juwels-booster profile's pools (as ``snakemake --profile juwels-booster`` merges them)."""

from __future__ import annotations

from pathlib import Path

import yaml

from l2lflow.cli import main
from l2lflow.config import load_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "config" / "examples"


def test_lsnn_examples_pass_l2lflow_validate(capsys) -> None:
    for name in ("lsnn_local.yaml", "lsnn_booster.yaml"):
        assert main(["validate", str(EXAMPLES / name)]) == 0
        out = capsys.readouterr().out
        assert "valid" in out and "torch.lsnn" in out


def test_booster_example_runs_on_the_profiles_gpu_pool() -> None:
    profile = yaml.safe_load((REPO / "profiles" / "juwels-booster" / "execution.yaml").read_text())
    config = load_config(EXAMPLES / "lsnn_booster.yaml", profile)
    assert config["execution"]["backend"] == "slurm"
    gpu = config["execution"]["pools"]["gpu"]
    assert gpu["partition"] == "booster" and gpu["gpus_per_job"] == gpu["processes"] == 4
    assert config["evaluation"]["device"] == "gpu"
    assert config["optimizee"]["options"]["device"] == "cuda"
    # the reference size of benchmarks/gpu_batch.py
    opts = config["optimizee"]["options"]
    assert (opts["n_neurons"], opts["n_inputs"], opts["n_steps"], opts["inner_steps"]) == (
        200,
        20,
        200,
        5,
    )
    assert config["population_size"] % config["evaluation"]["batch_size"] == 0


def test_local_example_is_small_and_cpu_capable() -> None:
    config = load_config(EXAMPLES / "lsnn_local.yaml")
    assert config["execution"]["backend"] == "local"
    assert config["evaluation"]["device"] == "auto"  # GPU worker if CUDA, else CPU
    opts = config["optimizee"]["options"]
    assert opts["n_neurons"] * opts["n_steps"] <= 10_000
