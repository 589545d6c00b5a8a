"""Writes notebooks/01_synthetic_tasks.ipynb (kept as code so the notebook's structure is reviewable)."""
import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# 01 — Synthetic tasks (paper Section 5.1): Table 1, Table 2, Figure 2

Can unlearning tell which fine-tuning task made the model good at a test task — and not be fooled by
the *answer format*? Two families of synthetic tasks (A: the successor of a number; B: the character
left after removing four) each have one test set and four training sets:
1 = similar task, same format · 2 = similar task, other format · 3 = unrelated task, same format ·
4 = unrelated task, other format.

The ground truth is leave-dataset-out (Eq. 1): retrain without training set *k* for the same number of
steps, and measure the change in test loss. UnTrac (Eq. 2–3) unlearns each training set by gradient
ascent; UnTrac-Inv (Eq. 4) unlearns the test set and watches the training losses. The baselines
(GradDot, GradCos, TracIn, HIF) come from `untrac.methods`.

At `paper` scale this uses T5-XL (LM-adapted). At `mini` scale a 4-layer OPT-style decoder is first
pretrained on the mirror's eight corpora (a stand-in for T5's pretraining), then fine-tuned."""),
    code("""scale = "mini"            # smoke | mini | paper
figures_dir = "../figures"
runs = None               # None: the preset's number of runs (4 at mini/paper)
progress = True""", metadata={"tags": ["parameters"]}),
    code("""import pandas as pd
import untrac
from untrac import evaluate, experiments, paper, report

preset = untrac.preset("synthetic", scale, runs=runs)
out = report.Output(figures_dir, "01")
pd.set_option("display.width", 200, "display.max_colwidth", 120)
preset"""),
    md("## Table 1 — what the tasks look like\nOne example per subset (the generator is seeded; see `untrac.synthetic_task`)."),
    code("""out.table(report.example_rows({f: untrac.synthetic_task(f, 4, seed=0) for f in preset.families}), "table1_examples")"""),
    md("""## Compute: fine-tune, leave-dataset-out, and every attribution method
One call per family and run (cached: a second execution loads everything). Run *r* draws its data and
its training order with seed *r*."""),
    code("""results = experiments.synthetic_experiment(preset, methods=untrac.METHODS, progress=progress)"""),
    md("""## Is the ground truth above the noise?
Re-training the fine-tuned model with other data-order seeds moves the test loss; the leave-dataset-out
influences must vary across training sets by more than that to mean anything."""),
    code("""out.table(experiments.synthetic_noise_floor(preset, progress=progress), "noise_floor")"""),
    md("""## Table 2 — standardised influence of each training set
z-scores over the four training sets, per method and run, then mean ± std over runs."""),
    code("""z = report.standardised_frame(results)
out.table(report.mean_std(z, ["family", "method"], "train", "z"), "table2_standardised")"""),
    md("The paper's Table 2 (T5-XL; only the rows quoted in the spec):"),
    code("""paper.TABLE2"""),
    code("""out.figure(report.plot_standardised(z), "table2_standardised");"""),
    md("""## Figure 2 — influence over unlearning steps
UnTrac: change in test loss after unlearning each training set, every evaluation interval.
UnTrac-Inv: change in each training set's loss after unlearning the test set. Mean and 95% band over runs."""),
    code("""out.figure(report.plot_trajectories(report.trajectory_frame(results)), "figure2_trajectories");"""),
    md("""## Correlation with the ground truth
Pearson and Spearman across the four training sets (one test set per family), mean ± std over runs.
With four points per correlation each number is very noisy; Table 2's z-scores are the paper's main view."""),
    code("""corr = pd.concat([evaluate.correlation_table(r).assign(family=f) for f, r in results.items()], ignore_index=True)
out.table(report.mean_std(corr, "method", "family", "pearson"), "pearson")"""),
    code("""out.table(report.mean_std(corr, "method", "family", "spearman"), "spearman")"""),
    code("""out.figure(report.plot_correlations(corr, "pearson", col="family"), "pearson");"""),
    md("## Cost of each method (seconds and passes, mean over runs)"),
    code("""cost = report.cost_frame(results)
out.table(cost.groupby(["family", "method"], sort=False).mean(numeric_only=True).drop(columns="run").reset_index(), "cost")"""),
    md("""## What we see
See `figures/README.md` for the numbers of the last `mini` run beside the paper's, and the discussion
of where they agree and where they differ."""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
})
nbf.write(nb, "notebooks/01_synthetic_tasks.ipynb")
