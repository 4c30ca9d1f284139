# Figures of a finished experiment, for `snakemake --report`.
#
#   snakemake --cores 2 figures                  # runs what is missing, then draws the figures
#   snakemake --report report.html figures       # one self-contained HTML file with them
#
# The report opens on the results: its landing text (the global `report:` description) is
# written by the figures rule (the run's findings and the fitness figure, embedded), the DAG
# beside it. The figures go to RESULTS/report/, not to `l2lflow plot`'s RESULTS/figures/: files
# Snakemake did not write itself have no metadata, and the report would warn about each.
#
# Not part of the default target `all`: drawing costs a few seconds (matplotlib) after every
# run, also of a tiny one, and most runs are looked at with `l2lflow status`/`l2lflow plot`.
# The figures are `l2lflow plot` (src/l2lflow/plots.py); the captions are in workflow/report/.
from l2lflow.optimizees.describe import describe_optimizee as _describe_optimizee


def _optimizee_has_tasks():
    """Whether the optimizee returns per-task arrays (a `task` dimension): the tasks heatmap."""
    try:  # already described (and cached) by the config validation in common.smk
        dims = _describe_optimizee(
            CONFIG["optimizee"]["name"], CONFIG["optimizee"].get("options", {})
        ).array_dims
    except Exception:
        return False
    return any("task" in d for d in dims.values())


def _optimizee_has_learning_curves():
    """Whether the optimizee stores the inner loop's loss per iteration: the learning curves."""
    try:
        dims = _describe_optimizee(
            CONFIG["optimizee"]["name"], CONFIG["optimizee"].get("options", {})
        ).array_dims
    except Exception:
        return False
    return "learning_curve" in dims


FIGURES_DIR = f"{RESULTS}/report"
_MULTI_OBJECTIVE = len(CONFIG["optimizee"].get("objectives") or []) >= 2
FIGURES = (
    ["fitness"]
    + (["pareto"] if _MULTI_OBJECTIVE else [])
    + ["parameters"]
    + (["tasks"] if _optimizee_has_tasks() else [])
    + ["runtime"]
    + (["learning_curves"] if _optimizee_has_learning_curves() else [])
)
_FIGURE_ORDER = {name: k + 1 for k, name in enumerate(FIGURES)}
LANDING = f"{FIGURES_DIR}/landing.rst"

# the landing text once the figures rule wrote it (`--report` runs after it), else a general one
report: os.path.abspath(LANDING) if os.path.exists(LANDING) else "../report/workflow.rst"


localrules:
    figures,


rule figures:
    """Draw the experiment's figures (PNG) and the report's landing text."""
    input:
        FINAL_TARGETS,
    output:
        landing=LANDING,
        **{
            name: report(
                f"{FIGURES_DIR}/{name}.png",
                caption=f"../report/{name}.rst",
                category=CONFIG["name"],
                labels={"figure": f"{_FIGURE_ORDER[name]}. {name}"},
            )
            for name in FIGURES
        },
    conda:
        "../../envs/l2lflow.yaml"
    shell:
        f"{L2LFLOW} plot {shlex.quote(RESULTS)} --out {shlex.quote(FIGURES_DIR)} "
        f"--figures {','.join(FIGURES)} --landing {shlex.quote(LANDING)}"
