# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The accuracy ladder
#
# Reads one results table written by `python -m roadmap.results.collect <sweep dir>` (`make roadmap`
# writes one beside every sweep) and draws the ladder like the paper's Figure 2, the kernel-size
# ablation and accuracy against GFLOPs. Set `RESULTS` to another table to draw that one; the
# tests run this notebook with papermill-style injection of `RESULTS`.
#
# Open it in Jupyter with `jupytext --to ipynb analysis/ladder.py` (or the jupytext extension).

# %% tags=["parameters"]
RESULTS = "../results/study/ladder/results.csv"

# %%
from pathlib import Path

import pandas as pd

from roadmap.results import plots

table = plots.load(RESULTS)
print(f"{RESULTS}: {len(table)} rows, {int(table['n'].sum())} completed runs")

# %% [markdown]
# ## The table
#
# Mean and standard deviation of test top-1 over seeds, the 95% interval of the mean, and the
# change against the parent step (the adopted step it builds on) with its 95% interval.

# %%
columns = ["index", "step", "variant", "n", "top1_mean", "top1_std", "top1_ci95", "delta_top1",
           "delta_ci95", "params", "gflops", "paper_top1", "paper_gflops", "status"]
pd.set_option("display.width", 200)
table[columns]

# %% [markdown]
# ## The ladder (Figure 2)
#
# Adopted steps in blue, the two side branches (kernels 9 and 11) in grey; error bars are the
# seeds' standard deviation; GFLOPs of the trained network beside each bar. The paper's ImageNet
# top-1 on the right, for the direction of each step.

# %%
fig = plots.ladder_figure(table, title=Path(RESULTS).parent.name)

# %% [markdown]
# ## Kernel size
#
# The ladder's kernel steps (3 is the moved-up depthwise step) and any `model.kernel_size`
# sweep in the table; the paper's values dashed, on their own axis.

# %%
fig = plots.kernel_figure(table)

# %% [markdown]
# ## Accuracy against GFLOPs

# %%
fig = plots.scatter_figure(table)

# %% [markdown]
# ## Steps whose change is resolved by the seeds
#
# A change is resolved when its 95% interval excludes zero.

# %%
resolved = table[(table["delta_top1"].abs() > table["delta_ci95"]) & table["delta_ci95"].notna()]
resolved[["step", "variant", "delta_top1", "delta_ci95"]]

# %% [markdown]
# ## Fidelity to the paper
#
# Which of the paper's changes this ladder reproduces (resolved with the paper's sign, where the
# paper's own 3-seed interval resolves them), contradicts or misses, the paper-flat changes it
# resolves, the Spearman correlation of the changes, and the end against the start
# (`roadmap.studies.fidelity`). Reported, never used to choose anything.

# %%
from IPython.display import Markdown

from roadmap.studies import fidelity

raw = pd.read_csv(RESULTS)
Markdown(fidelity.to_markdown(fidelity.ladders_of(raw), "resnet50", [RESULTS]))
