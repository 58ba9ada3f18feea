"""Scoring arithmetic: balanced accuracy from yes/no answers, the fuzzing scorer's wrongly marked tokens, means
with bootstrap confidence intervals, AUROC with ties."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from .examples import Window

__all__ = ["answer_auroc", "auroc", "balanced_accuracy", "confusion", "mean_ci", "wrong_marks"]


def confusion(truth: Sequence[bool], p_yes: Sequence[float]) -> dict[str, int]:
    """Counts of true/false positives/negatives; an answer is "yes" when its probability is above one half."""
    c = {"tp": 0, "fn": 0, "tn": 0, "fp": 0}
    for t, p in zip(truth, p_yes, strict=True):
        said = p > 0.5
        c["tp" if t and said else "fn" if t else "fp" if said else "tn"] += 1
    return c


def balanced_accuracy(truth: Sequence[bool], p_yes: Sequence[float]) -> float | None:
    """Mean of the true-positive rate and the true-negative rate; None without both classes."""
    c = confusion(truth, p_yes)
    pos, neg = c["tp"] + c["fn"], c["tn"] + c["fp"]
    if not pos or not neg:
        return None
    return 0.5 * (c["tp"] / pos + c["tn"] / neg)


def answer_auroc(truth: Sequence[bool], p_yes: Sequence[float]) -> float | None:
    """How well the scorer's P(yes) ranks true items above false ones (ties half), whatever its bias: a scorer
    that leans to "no" on everything can still rank; None without both classes."""
    pos = [p for t, p in zip(truth, p_yes, strict=True) if t]
    neg = [p for t, p in zip(truth, p_yes, strict=True) if not t]
    if not pos or not neg:
        return None
    return float(auroc(torch.tensor(pos)[:, None], torch.tensor(neg)[:, None])[0])


def wrong_marks(window: Window, rng: random.Random) -> list[int] | None:
    """As many positions as the window has active tokens, all where the feature is silent (None if impossible)."""
    active = window.active()
    silent = [i for i, a in enumerate(window.acts) if a <= 0]
    if not active or len(silent) < len(active):
        return None
    return sorted(rng.sample(silent, len(active)))


def mean_ci(values: Sequence[float], level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and a percentile-bootstrap confidence interval (nan for no values)."""
    x = torch.tensor([v for v in values if v is not None], dtype=torch.float64)
    if x.numel() == 0:
        return float("nan"), float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    means = x[torch.randint(0, x.numel(), (n_boot, x.numel()), generator=g)].mean(1)
    a = (1 - level) / 2
    lo, hi = torch.quantile(means, torch.tensor([a, 1 - a], dtype=torch.float64)).tolist()
    return float(x.mean()), lo, hi


def auroc(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Per column, P(a positive scores above a negative) + half P(tie): ``pos [P, F]``, ``neg [N, F]`` -> ``[F]``.
    Counts come from sorted negatives and ``searchsorted``, so memory is O((P + N) F)."""
    neg_sorted = neg.T.contiguous().sort(dim=1).values  # [F, N]
    p = pos.T.contiguous()  # [F, P]
    below = torch.searchsorted(neg_sorted, p, right=False)  # negatives strictly below each positive
    upto = torch.searchsorted(neg_sorted, p, right=True)  # ... and equal to it
    wins = below.double() + 0.5 * (upto - below).double()
    return wins.sum(1) / (pos.shape[0] * neg.shape[0])
