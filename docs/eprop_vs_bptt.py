"""e-prop (NEST) vs BPTT (PyTorch) on the same sine tasks: landscapes, generations, held-out.

Draws docs/figures/eprop_vs_bptt.png from the two runs of docs/eprop.md (results/eprop-sine and
results/bptt-sine), re-evaluating generation 0 and the last generation of each on 4 common
never-seen tasks:

    PYTHONPATH=src python docs/eprop_vs_bptt.py [out.png]
"""

import sys

import numpy as np
from matplotlib.figure import Figure

import l2lflow
from l2lflow.optimizees.base import EvaluationContext
from l2lflow.optimizees.nest.eprop import eprop
from l2lflow.optimizees.torch_lsnn import lsnn

runs = {"e-prop (nest.eprop)": "results/eprop-sine", "BPTT (torch.lsnn)": "results/bptt-sine"}
out = sys.argv[1] if len(sys.argv) > 1 else "docs/figures/eprop_vs_bptt.png"
HELD_OUT = 424242  # one task seed for both, never used by a run
fig = Figure(figsize=(11, 7), layout="constrained")
axes = fig.subplots(2, 2)
for col, (label, path) in enumerate(runs.items()):
    ds = l2lflow.open_results(path)
    opts = ds.attrs["l2lflow"]["config"]["optimizee"]["options"]
    names = list(ds.attrs["l2lflow"]["config"]["space"])
    fit = ds.fitness.values
    ax = axes[0, col]
    sc = ax.scatter(
        ds.inner_lr.values.ravel(),
        ds.w_scale.values.ravel(),
        c=np.log10(fit.ravel()),
        cmap="viridis_r",
        s=25,
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("inner_lr")
    ax.set_ylabel("w_scale")
    ax.set_title(f"{label}: log10 held-out MSE, all evaluations", fontsize=9)
    fig.colorbar(sc, ax=ax)
    gens = ds.generation.values
    axes[1, 0].plot(
        gens, np.nanmedian(fit, axis=1), marker="o", color=f"C{col}", label=f"{label}: median"
    )
    axes[1, 0].plot(
        gens, np.nanmin(fit, axis=1), marker="s", ls="--", color=f"C{col}", label=f"{label}: best"
    )
    # held-out: first and last generation on the same new tasks
    rows = []
    for g in (0, len(gens) - 1):
        params = [
            {n: float(ds[n].values[g, i]) for n in names} for i in range(ds.sizes["individual"])
        ]
        seeds = [int(s) for s in ds.seed.values[g]]
        ctxs = [EvaluationContext(g, i, s, task_seed=HELD_OUT) for i, s in enumerate(seeds)]
        o = {**opts, "n_tasks": 4}
        if "eprop" in path:
            f = [
                eprop(p, s, context=c, **o)["fitness"]
                for p, s, c in zip(params, seeds, ctxs, strict=True)
            ]
        else:
            f = [r["fitness"] for r in lsnn(params, seeds, contexts=ctxs, device="cpu", **o)]
        rows.append(np.array(f))
        print(
            f"{label} generation {g}: held-out MSE on 4 common new tasks: median {np.nanmedian(f):.3f} best {np.nanmin(f):.3f} mean {np.nanmean(f):.3f}"
        )
    axes[1, 1].boxplot(
        [np.log10(r[np.isfinite(r)]) for r in rows], positions=[col * 3, col * 3 + 1], widths=0.7
    )
axes[1, 0].set_yscale("log")
axes[1, 0].set_xlabel("generation")
axes[1, 0].set_ylabel("held-out MSE (each generation's own tasks)")
axes[1, 0].legend(fontsize=7)
axes[1, 1].set_xticks([0, 1, 3, 4], ["e-prop\ngen 0", "e-prop\nlast", "BPTT\ngen 0", "BPTT\nlast"])
axes[1, 1].set_ylabel("log10 held-out MSE, 4 common new tasks")
fig.suptitle("e-prop in NEST vs BPTT in PyTorch, same config and sine tasks (eprop_sine.yaml)")
fig.savefig(out, dpi=100)
print("wrote", out)
