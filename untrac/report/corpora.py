"""Section 5.2 (notebook 02): pretraining corpora: the paper's Tables 3 and 5, noise floor, ground-truth variants, corpus influence, cost."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .. import paper as paper_values

from .style import ERR_KWS, _draw_paper, _extend_legend, _name, _offsets, _over, _runs, annotate, mean_std, paper_handle, themed


TABLE35_COLUMNS = ["toxigen/equal", "winobias/equal", "truthfulqa/equal",
                   "toxigen/different", "winobias/different", "truthfulqa/different"]


def corpora_table(corr: pd.DataFrame, value: str = "pearson", digits: int = 3) -> pd.DataFrame:
    """Table 3/5 layout: one row per method, columns ``<testset>/<setting>``, cells 'mean ± std' over runs."""
    frame = corr.assign(column=corr["testset"] + "/" + corr["setting"])
    table = mean_std(frame, "method", "column", value, digits)
    cols = [c for c in TABLE35_COLUMNS if c in table.columns] + [c for c in table.columns if c not in TABLE35_COLUMNS and c != "method"]
    return table[["method", *cols]]


def beside_paper(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Interleave our cells with the paper's: for every column ``c``, ``c`` then ``c (paper)``."""
    merged = ours.merge(paper, on="method", how="outer", suffixes=("", " (paper)"), sort=False)
    cols = ["method"]
    for c in ours.columns[1:]:
        cols += [c] + ([f"{c} (paper)"] if f"{c} (paper)" in merged.columns else [])
    order = {m: i for i, m in enumerate(dict.fromkeys([*ours["method"], *paper["method"]]))}
    return merged[cols].sort_values("method", key=lambda s: s.map(order)).reset_index(drop=True)


NOISE_BARS = {"corpus_spread": "std over corpora of the truth (mean over seeds)",
              "corpus_spread_corrected": "the same, its seed noise removed",
              "seed_sd": "noise of one seed's truth (std over seeds)",
              "heldout_se": "noise of the truth each run is scored against",
              "truth_se": "noise of the mean over all seeds"}


@themed
def plot_noise_floor(frame: pd.DataFrame, *, scale: str | None = None, caption: str | None = None) -> plt.Figure:
    """Bars: spread of the ground truth across corpora vs its seed-to-seed noise
    (:func:`untrac.experiments.corpora.noise_floor`'s columns)."""
    bars = {k: v for k, v in NOISE_BARS.items() if k in frame.columns}
    if "setting" in frame.columns and frame["setting"].nunique() > 1:  # one group of bars per (test set, setting)
        frame = frame.assign(testset=frame["testset"] + "\n" + frame["setting"] + " sizes")
    long = frame.melt(id_vars=["testset"], value_vars=list(bars), var_name="quantity", value_name="nats")
    long["quantity"] = long["quantity"].map(bars)
    fig, ax = plt.subplots(figsize=(4 + 1.1 * long["testset"].nunique(), 3.2))
    sns.barplot(data=long, x="testset", y="nats", hue="quantity", ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel("nats (mean over subsets)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    seeds = int(frame["seeds"].iloc[0]) if "seeds" in frame.columns else None
    text = ("Per test set, averaged over its subsets: how much the leave-dataset-out ground truth varies across the "
            "corpora (first bar; second, with the seed noise it carries removed) against how much it moves between training seeds"
            + (f" ({seeds} seeds)" if seeds else "") + ": for one seed's truth, for the mean of the other seeds "
            "(what each run is scored against) and for the mean of all seeds. The truth can only be traced where "
            "the first bar clearly exceeds the others (3x is this project's bar).")
    return annotate(fig, text, scale, caption)


@themed
def plot_regime_study(frame: pd.DataFrame, selected: str | None = None, *, fallback: str | None = None,
                      scale: str | None = None, caption: str | None = None) -> plt.Figure:
    """The regime study (:func:`untrac.experiments.regime.regime_study`): left, the truth's spread over its
    noise per candidate and test set, for one seed's truth and for a 3-seed mean, with the 3x bar; right,
    the base model's training loss against the unigram entropy of its data, and the seconds per model."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    long = frame.melt(id_vars=["candidate", "testset"], value_vars=["ratio_one_seed", "ratio_3_seeds"],
                      var_name="truth", value_name="ratio")
    long["truth"] = long["truth"].map({"ratio_one_seed": "one seed", "ratio_3_seeds": "mean of 3 seeds"})
    long["bar"] = long["testset"] + ", " + long["truth"]
    sns.barplot(data=long, x="candidate", y="ratio", hue="bar", ax=left)
    left.axhline(3, color="black", ls="--", lw=0.9)
    left.set_ylabel("truth spread / seed noise")
    left.set_xlabel("")
    left.legend(fontsize="x-small", ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    per = frame.groupby("candidate", sort=False)[["train_loss", "unigram", "seconds_per_model"]].mean()
    x = range(len(per))
    right.bar([i - 0.2 for i in x], per["unigram"], width=0.4, label="unigram entropy", color="0.7")
    right.bar([i + 0.2 for i in x], per["train_loss"], width=0.4, label="base training loss", color="tab:blue")
    for i, (_, r) in enumerate(per.iterrows()):
        right.text(i, max(r["unigram"], r["train_loss"]) + 0.1, f"{r['seconds_per_model']:.0f} s",
                   ha="center", va="bottom", fontsize="x-small")
    right.set_xticks(list(x), per.index, rotation=20, fontsize="small")
    right.set_ylabel("nats per token")
    right.set_ylim(0, 1.2 * per[["unigram", "train_loss"]].to_numpy().max())
    right.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2)
    text = ("Each candidate is the mini corpora preset with one change, judged without any attribution method. Left: "
            "how far the leave-one-corpus-out truth rises above its training-seed noise (spread across corpora over "
            "the seed-to-seed sd; the 3-seed mean's noise is sqrt(3) smaller), 3x dashed. Right: the base model's "
            "training loss against the unigram entropy of its data (how much it learnt beyond word frequencies), "
            "and above them the seconds a model costs. " + (f"Selected by the rule stated in advance: {selected}." if selected
                                                 else "No candidate meets the rule stated in advance.")
            + (f" The fallback (least training time to 3x on the worst test set) takes: {fallback}." if fallback else ""))
    return annotate(fig, text, scale, caption)


@themed
def plot_synthetic_regime(frame: pd.DataFrame, selected: str | None = None, *, min_exact_match: float = 0.25,
                          scale: str | None = None, caption: str | None = None) -> plt.Figure:
    """The synthetic regime study (:func:`untrac.experiments.regime.synthetic_regime_study`): left, the truth's
    spread over one seed's noise per candidate and family, 3x dashed; right, the fine-tuned models' exact match
    on the test set (the rule's bar dashed) and, above the bars, the seconds a fine-tuned model costs."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    sns.barplot(data=frame, x="candidate", y="ratio_one_seed", hue="family", ax=left)
    left.axhline(3, color="black", ls="--", lw=0.9)
    left.set_ylabel("truth spread / one seed's noise")
    sns.barplot(data=frame, x="candidate", y="exact_match", hue="family", ax=right)
    right.axhline(min_exact_match, color="black", ls="--", lw=0.9)
    right.set_ylabel("test exact match (greedy)")
    right.set_ylim(0, 1.1)
    for i, (_, r) in enumerate(frame.groupby("candidate", sort=False)["seconds_per_model"].mean().items()):
        right.text(i, 1.02, f"{r:.0f} s", ha="center", va="bottom", fontsize="x-small")
    for ax in (left, right):
        ax.set_xlabel("")
        ax.tick_params(axis="x", labelsize="small")
        ax.legend(title="family", fontsize="x-small", title_fontsize="x-small")
    seeds = int(frame["seeds"].iloc[0]) if len(frame) else 0
    text = (f"Each candidate is the mini synthetic preset with one change, judged without any attribution method, on "
            f"run 0 of both families with {seeds} training seeds. Left: the leave-dataset-out truth's spread across "
            "the four training sets over its training-seed sd (3x dashed). Right: the share of test prompts whose "
            f"target greedy decoding reproduces ({min_exact_match:g} dashed), and the seconds a fine-tuned model costs. "
            + (f"Selected by the rule stated in advance: {selected}." if selected
               else "No candidate meets the rule stated in advance."))
    return annotate(fig, text, scale, caption)


@themed
def plot_ground_truth_variants(frame: pd.DataFrame, *, scale: str | None = None, caption: str | None = None) -> plt.Figure:
    """Figure 4: leave-dataset-out influence per corpus (mean and sd over test subsets), both variants."""
    frame = frame.assign(label=frame["corpus"] + "\n(" + (100 * frame["share"]).round(0).astype(int).astype(str) + "%)")
    grid = sns.catplot(data=frame, x="label", y="influence", col="variant", kind="bar", errorbar="sd",
                       height=3.4, aspect=1.6, sharey=False, color="tab:blue")
    grid.set_titles("{col_name}")
    grid.set_axis_labels("", "ground-truth influence (nats)")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", labelrotation=90, labelsize="small")
        ax.axhline(0, color="black", lw=0.8)
    n = _runs(frame, "subset")
    text = (f"Bars: {_over(n, 'test subsets')} of the rise of the test loss when each corpus is left out of training "
            "(label: its share of the training blocks). Left: the counterfactual trains on everything else once "
            "(fewer steps without a large corpus); right: it trains for the same number of steps (Eq. 1).")
    return annotate(grid.figure, text, scale, caption)


@themed
def plot_corpus_influence(frame: pd.DataFrame, value: str = "z", *, scale: str | None = None,
                          caption: str | None = None) -> plt.Figure:
    """Heatmaps of per-corpus influence (mean over runs): methods x corpora, one panel per test set and setting."""
    settings = list(dict.fromkeys(frame["setting"]))
    testsets = list(dict.fromkeys(frame["testset"]))
    methods = list(dict.fromkeys(frame["method"]))
    corpora = list(dict.fromkeys(frame["corpus"]))
    fig, axes = plt.subplots(len(testsets), len(settings), figsize=(6.2 * len(settings), 2.9 * len(testsets)), squeeze=False)
    for i, testset in enumerate(testsets):
        for j, setting in enumerate(settings):
            sub = frame[(frame["testset"] == testset) & (frame["setting"] == setting)]
            mat = sub.groupby(["method", "corpus"], sort=False)[value].mean().unstack("corpus").reindex(index=methods, columns=corpora)
            sns.heatmap(mat, ax=axes[i, j], cmap="RdBu_r", center=0, annot=True, fmt=".1f", annot_kws={"size": 7},
                        cbar=False, vmin=-2, vmax=2)
            axes[i, j].set_title(f"{testset} — {setting} sizes")
            axes[i, j].set_xlabel("")
            axes[i, j].set_ylabel("")
            axes[i, j].tick_params(axis="x", labelrotation=45, labelsize="small")
            for t in axes[i, j].get_xticklabels():
                t.set_horizontalalignment("right")
    fig.tight_layout()
    n = _runs(frame)
    text = (f"Cells: influence of each corpus, z-scored over the corpora per test subset, averaged over the subsets and "
            f"{'one run' if n in (None, 1) else f'{n} runs'}. Red: removing the corpus raises the test loss (it helped); "
            "blue: lowers it. A method agrees with the ground truth (its own row) when its row has the same colours. "
            "Colours saturate at ±2.")
    return annotate(fig, text, scale, caption)


@themed
def plot_cost_accuracy(frame: pd.DataFrame, value: str = "pearson", *, scale: str | None = None,
                       caption: str | None = None) -> plt.Figure:
    """Mean correlation with the ground truth against seconds per run, one point per method and setting."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    sns.scatterplot(data=frame, x="seconds", y=value, hue="method", style="setting", s=80, ax=ax)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("seconds per run (log)")
    ax.set_ylabel(f"mean {_name(value)} with ground truth")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    text = (f"One point per method and corpus-size setting: wall time of the attribution per run (trained models "
            f"excluded; machine-dependent) against the {_name(value)} correlation with the ground truth, averaged over test "
            "sets and runs.")
    return annotate(fig, text, scale, caption)


def _paper_corpora(value: str) -> pd.DataFrame:
    """Tables 3 (Pearson) / 5 (Spearman) long: method, testset, setting, mean, std."""
    mean, std = {"pearson": (paper_values.TABLE3, paper_values.TABLE3_STD),
                 "spearman": (paper_values.TABLE5, paper_values.TABLE5_STD)}[value]
    long = mean.melt(id_vars="method", var_name="column", value_name="mean").merge(
        std.melt(id_vars="method", var_name="column", value_name="std"), on=["method", "column"])
    long[["testset", "setting"]] = long["column"].str.split("/", n=1, expand=True)
    return long


@themed
def plot_corpora_correlations(corr: pd.DataFrame, value: str = "pearson", *, paper: bool = True, scale: str | None = None,
                              caption: str | None = None) -> plt.Figure:
    """Correlation with the ground truth per method (mean and sd over runs), by test set and setting;
    black diamonds with whiskers: the paper's Table 3 (Pearson) or Table 5 (Spearman), mean ± std."""
    methods = list(dict.fromkeys(corr["method"]))
    settings = list(dict.fromkeys(corr["setting"]))
    testsets = list(dict.fromkeys(corr["testset"]))
    grid = sns.catplot(data=corr, x="method", y=value, hue="setting", col="testset", kind="bar", errorbar="sd", err_kws=ERR_KWS,
                       order=methods, hue_order=settings, col_order=testsets, height=3.2, aspect=1.3)
    grid.set_xticklabels(rotation=40, ha="right")
    grid.set_axis_labels("", f"{_name(value)} with ground truth")
    grid.set_titles("{col_name}")
    table = {"pearson": "Table 3", "spearman": "Table 5"}.get(value)
    drawn = False
    offsets = _offsets(len(settings))
    for testset, ax in grid.axes_dict.items():
        ax.axhline(0, color="black", lw=0.8)
        if paper and table:
            theirs = _paper_corpora(value)
            sub = theirs[(theirs["testset"] == testset) & theirs["method"].isin(methods) & theirs["setting"].isin(settings)]
            points = [(methods.index(m) + offsets[settings.index(s)], v, e)
                      for m, s, v, e in zip(sub["method"], sub["setting"], sub["mean"], sub["std"])]
            drawn |= _draw_paper(ax, points, f"paper, {table}") is not None
    if drawn:
        _extend_legend(grid, {f"paper, {table} (OPT-125M)": paper_handle(f"paper, {table}")})
    text = (f"Bars: {_over(_runs(corr))} of the {_name(value)} correlation with the leave-dataset-out ground truth across the "
            "corpora, averaged over each test set's subsets; colours: equal or different corpus sizes.")
    extra = (f"Black diamonds and whiskers: the paper's {table} (OPT-125M on the real corpora, mean ± std over 4 runs), "
             "beside the bar of the same setting." if drawn else None)
    return annotate(grid.figure, text, scale, "\n".join(filter(None, [extra, caption])) or None)


@themed
def plot_example_check(correlations: pd.DataFrame, chance: float | None = None, *, scale: str | None = None,
                       caption: str | None = None) -> plt.Figure:
    """Per-example scores against exact leave-one-block-out effects: Spearman per method and test set
    (bars: mean over the test set's subsets, error bars their sd); ``chance``: the 5% level of independence."""
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    sns.barplot(data=correlations, x="method", y="spearman", hue="testset", errorbar="sd", err_kws=ERR_KWS, ax=ax)
    ax.axhline(0, color="black", lw=0.8)
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance, 5% level ({chance:.2f})")
    ax.set_xlabel("")
    ax.set_ylabel("Spearman with exact effects")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    n = correlations.groupby("method").size().iloc[0] if len(correlations) else 0
    text = (f"Each training block of a small pool is left out of a short full-batch fine-tuning of the base model; "
            f"its exact effect on every test subset's loss is ranked against each method's per-block score "
            f"({n} test subsets; bars: mean over a test set's subsets, error bars: their sd). Dashed: the Spearman "
            "an independent ranking exceeds with 5% chance.")
    return annotate(fig, text, scale, caption)
