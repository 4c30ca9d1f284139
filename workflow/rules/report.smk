# Figures of a finished experiment, for `snakemake --report`.
#
#   snakemake --cores 2 figures                  # runs what is missing, then draws the figures
#   snakemake --report report.html figures       # one self-contained HTML file with them
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


FIGURES_DIR = f"{RESULTS}/figures"
FIGURES = ["fitness", "parameters", "runtime"] + (["tasks"] if _optimizee_has_tasks() else [])
_FIGURE_ORDER = {"fitness": 1, "parameters": 2, "tasks": 3, "runtime": 4}


localrules:
    figures,


rule figures:
    """Draw the experiment's figures (PNG) for the report: fitness, parameters, tasks, runtime."""
    input:
        FINAL_TARGETS,
    output:
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
        f"--figures {','.join(FIGURES)}"
