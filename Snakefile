# l2lflow: the generation loop of a learning-to-learn experiment.
#
#   snakemake --cores 2                          # the default experiment (config/config.yaml)
#   snakemake --cores 2 --configfile FILE.yaml   # any experiment
#   snakemake --profile juwels                   # on JUWELS (see README: "Running on JUWELS")
#
# Per generation g: sample (optimizer ask -> store) -> evaluate (all individuals on Dask ->
# store) -> aggregate (optimizer tell + checkpoint). Rules are thin shell calls into a
# long-lived l2lflow engine; the Zarr store is never a Snakemake output, small sentinel
# files under results/<name>/steps/ are.
import sys

# each generation's sample rule depends on the previous generation's aggregate: a 1,000-generation
# experiment is a 3,000-job chain, which Snakemake resolves recursively (FACTS.md: the default limit
# breaks near 300 generations)
sys.setrecursionlimit(max(sys.getrecursionlimit(), 200000))

# the experiment: --configfile FILE, else config/config.yaml (see workflow/rules/common.smk)
include: "workflow/rules/common.smk"
include: "workflow/rules/generation.smk"
include: "workflow/rules/report.smk"

rule all:
    input:
        FINAL_TARGETS,
    default_target: True
