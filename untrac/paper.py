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
