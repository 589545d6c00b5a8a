"""The paper's reported numbers, to print beside ours (Isonuma & Titov 2024, Tables 2-4)."""
from __future__ import annotations

import pandas as pd

#: Table 2 — standardised influence of training sets 1-4 (synthetic; only the rows SPEC quotes).
TABLE2 = pd.DataFrame(
    [
        ("A", "Ground truth", 1.263, 0.692, -1.064, -0.891),
        ("B", "Ground truth", 1.150, 0.837, -1.025, -0.962),
        ("A", "UnTrac", 1.443, 0.344, -0.574, -1.212),
        ("A", "UnTrac-Inv", 0.980, 1.014, -1.104, -0.891),
    ],
    columns=["family", "method", "train1", "train2", "train3", "train4"],
)

#: Table 3 — Pearson correlation with the ground truth, mean over 4 runs (Sec. 5.2).
TABLE3 = pd.DataFrame(
    [
        ("GradDot", -0.123, 0.418, 0.156, -0.250, 0.446, -0.524),
        ("GradCos", -0.050, 0.524, 0.447, -0.337, 0.496, -0.401),
        ("HIF (Arnoldi)", -0.068, 0.559, 0.250, -0.343, 0.584, -0.362),
        ("HIF (LiSSA)", -0.040, 0.389, -0.178, 0.071, -0.092, -0.098),
        ("TracIn", 0.207, 0.082, 0.591, -0.187, 0.183, 0.081),
        ("UnTrac", 0.419, 0.743, 0.314, 0.403, 0.518, 0.246),
        ("UnTrac-Inv", 0.372, 0.813, 0.582, 0.393, 0.275, 0.360),
    ],
    columns=["method", "toxigen/equal", "winobias/equal", "truthfulqa/equal",
             "toxigen/different", "winobias/different", "truthfulqa/different"],
)

_TABLE35_COLUMNS = ["method", "toxigen/equal", "winobias/equal", "truthfulqa/equal",
                    "toxigen/different", "winobias/different", "truthfulqa/different"]

#: Table 3 — the standard deviations over 4 runs that go with :data:`TABLE3`.
TABLE3_STD = pd.DataFrame(
    [
        ("GradDot", 0.008, 0.018, 0.022, 0.007, 0.015, 0.003),
        ("GradCos", 0.008, 0.014, 0.015, 0.007, 0.012, 0.004),
        ("HIF (Arnoldi)", 0.023, 0.010, 0.024, 0.005, 0.014, 0.006),
        ("HIF (LiSSA)", 0.328, 0.117, 0.173, 0.091, 0.042, 0.058),
        ("TracIn", 0.010, 0.013, 0.014, 0.005, 0.019, 0.010),
        ("UnTrac", 0.063, 0.086, 0.223, 0.033, 0.122, 0.082),
        ("UnTrac-Inv", 0.008, 0.012, 0.016, 0.037, 0.125, 0.017),
    ],
    columns=_TABLE35_COLUMNS,
)

#: Table 5 (Appendix A.3) — Spearman correlation with the ground truth, mean over 4 runs (Sec. 5.2).
TABLE5 = pd.DataFrame(
    [
        ("GradDot", -0.017, 0.390, 0.122, -0.116, 0.445, -0.483),
        ("GradCos", 0.104, 0.554, 0.446, -0.124, 0.478, -0.331),
        ("HIF (Arnoldi)", -0.194, 0.509, 0.218, -0.231, 0.513, -0.243),
        ("HIF (LiSSA)", -0.002, 0.374, -0.191, 0.009, -0.110, -0.127),
        ("TracIn", 0.337, 0.039, 0.574, -0.037, 0.201, 0.020),
        ("UnTrac", 0.421, 0.814, 0.374, 0.440, 0.265, 0.144),
        ("UnTrac-Inv", 0.118, 0.854, 0.571, 0.284, 0.249, 0.265),
    ],
    columns=_TABLE35_COLUMNS,
)

#: Table 5 — standard deviations over 4 runs.
TABLE5_STD = pd.DataFrame(
    [
        ("GradDot", 0.010, 0.020, 0.014, 0.008, 0.051, 0.010),
        ("GradCos", 0.013, 0.015, 0.028, 0.004, 0.050, 0.013),
        ("HIF (Arnoldi)", 0.026, 0.018, 0.009, 0.007, 0.009, 0.015),
        ("HIF (LiSSA)", 0.296, 0.149, 0.199, 0.024, 0.130, 0.024),
        ("TracIn", 0.005, 0.030, 0.016, 0.009, 0.003, 0.043),
        ("UnTrac", 0.082, 0.060, 0.155, 0.046, 0.149, 0.099),
        ("UnTrac-Inv", 0.018, 0.010, 0.025, 0.058, 0.148, 0.014),
    ],
    columns=_TABLE35_COLUMNS,
)


def paper_table(kind: str = "pearson", digits: int = 3) -> pd.DataFrame:
    """Table 3 (``"pearson"``) or Table 5 (``"spearman"``) as 'mean ± std' strings."""
    mean, std = {"pearson": (TABLE3, TABLE3_STD), "spearman": (TABLE5, TABLE5_STD)}[kind]
    out = mean[["method"]].copy()
    for col in _TABLE35_COLUMNS[1:]:
        out[col] = [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(mean[col], std[col])]
    return out


#: Table 4 — Pearson with the ground truth (ToxiGen, equal sizes), mean and std over 4 runs.
#: Top: optimizers at lr 5e-5; bottom: Adam at each learning rate.
TABLE4_OPTIMIZER = pd.DataFrame(
    [
        ("UnTrac", "sgd", -0.147, 0.014), ("UnTrac", "sgd_momentum", -0.239, 0.011), ("UnTrac", "rmsprop", 0.418, 0.063),
        ("UnTrac", "adam", 0.419, 0.063), ("UnTrac", "adafactor", 0.345, 0.179),
        ("UnTrac-Inv", "sgd", -0.100, 0.069), ("UnTrac-Inv", "sgd_momentum", -0.099, 0.070),
        ("UnTrac-Inv", "rmsprop", -0.231, 0.012), ("UnTrac-Inv", "adam", 0.376, 0.008), ("UnTrac-Inv", "adafactor", 0.313, 0.003),
    ],
    columns=["method", "optimizer", "mean", "std"],
)
TABLE4_LR = pd.DataFrame(
    [
        ("UnTrac", 5e-6, -0.127, 0.302), ("UnTrac", 1e-5, 0.312, 0.311), ("UnTrac", 5e-5, 0.419, 0.063),
        ("UnTrac", 1e-4, 0.377, 0.040), ("UnTrac", 5e-4, 0.329, 0.015),
        ("UnTrac-Inv", 5e-6, 0.100, 0.084), ("UnTrac-Inv", 1e-5, 0.197, 0.067), ("UnTrac-Inv", 5e-5, 0.376, 0.008),
        ("UnTrac-Inv", 1e-4, 0.137, 0.019), ("UnTrac-Inv", 5e-4, 0.027, 0.015),
    ],
    columns=["method", "paper_lr", "mean", "std"],
)
