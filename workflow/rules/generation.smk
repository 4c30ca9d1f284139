# One generation = sample -> evaluate -> aggregate; generation g's sample needs g-1's aggregate.

wildcard_constraints:
    generation=r"\d+",


localrules:
    sample,
    evaluate,
    aggregate,


def previous_generation(wildcards):
    g = int(wildcards.generation)
    return [] if g == 0 else [step_file(g - 1, "aggregated")]


rule sample:
    """Ask the optimizer for generation g; parameters and seeds go to the store."""
    input:
        previous_generation,
    output:
        f"{STEPS}/{{generation}}.sampled",
    conda:
        "../../envs/l2lflow.yaml"
    shell:
        STEP + " --generation {wildcards.generation} --sentinel {output}"


rule evaluate:
    """Evaluate every individual of generation g on the Dask workers; results go to the store."""
    input:
        f"{STEPS}/{{generation}}.sampled",
    output:
        f"{STEPS}/{{generation}}.evaluated",
    conda:
        "../../envs/l2lflow.yaml"
    shell:
        STEP + " --generation {wildcards.generation} --sentinel {output}"


rule aggregate:
    """Tell the optimizer the fitness of generation g and checkpoint its state in the store."""
    input:
        f"{STEPS}/{{generation}}.evaluated",
    output:
        f"{STEPS}/{{generation}}.aggregated",
    conda:
        "../../envs/l2lflow.yaml"
    shell:
        STEP + " --generation {wildcards.generation} --sentinel {output}"


rule meta_test:
    """After the last generation: the best individuals on held-out tasks (learning to learn)."""
    input:
        step_file(GENERATIONS - 1, "aggregated"),
    output:
        f"{STEPS}/meta_test.after_{GENERATIONS - 1:06d}",
    conda:
        "../../envs/l2lflow.yaml"
    shell:
        STEP + f" --generation {GENERATIONS - 1} --sentinel {{output}}"
