"""Sparse probing (as in SAEBench, Gao et al. 2024): can k features of a dictionary classify texts as well as a
dense probe on the activation the dictionary reads?

Per class, one-vs-rest: texts are mean-pooled (:mod:`.pooled`), split into train and test (stratified, seeded),
the k features with the largest difference of class means on the train texts are kept, and a logistic regression
on them is scored by balanced accuracy on the test texts; the dense probe is the same regression on the raw
activation. Reported: the mean over classes for each k, and the dense probe's.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import InterpError
from .pooled import Pooled

__all__ = ["fit_logistic", "split", "sparse_probing", "top_k_by_mean_diff"]

KS = (1, 2, 5, 10, 20)


def split(labels: Sequence[str], test_fraction: float = 0.3, seed: int = 0) -> tuple[list[int], list[int]]:
    """Train and test indices, stratified by label (every class with 2+ texts has one in each)."""
    rng = random.Random(seed)
    by: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by.setdefault(lab, []).append(i)
    train, test = [], []
    for idx in by.values():
        rng.shuffle(idx)
        n_test = min(len(idx) - 1, max(1, round(test_fraction * len(idx)))) if len(idx) > 1 else 0
        test += idx[:n_test]
        train += idx[n_test:]
    return sorted(train), sorted(test)


def fit_logistic(x: Tensor, y: Tensor, l2: float = 1e-3, iters: int = 100) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(w, b, mean, std)`` of an L2-regularised logistic regression on standardised ``x [n, d]`` for ``y [n]``
    (bool), classes weighted equally."""
    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / std
    t = y.double()
    pos = t.sum().clamp(min=1)
    neg = (1 - t).sum().clamp(min=1)
    weight = torch.where(y, 0.5 / pos, 0.5 / neg)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, t, reduction="none")).sum()
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach(), mean, std


def _balanced(pred: Tensor, y: Tensor) -> float:
    tpr = (pred & y).sum() / y.sum().clamp(min=1)
    tnr = (~pred & ~y).sum() / (~y).sum().clamp(min=1)
    return float(0.5 * (tpr + tnr))


def _probe(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor) -> float:
    w, b, mean, std = fit_logistic(x_train, y_train)
    pred = ((x_test.double() - mean) / std) @ w + b > 0
    return _balanced(pred, y_test)


def top_k_by_mean_diff(x: Tensor, y: Tensor, k: int) -> Tensor:
    """The ``k`` columns of ``x`` whose mean differs most between ``y`` and not ``y``."""
    diff = (x[y].mean(0) - x[~y].mean(0)).abs()
    return diff.topk(min(k, x.shape[1])).indices


def sparse_probing(pooled: Pooled, labels: Sequence[str], *, ks: Sequence[int] = KS, test_fraction: float = 0.3,
                   seed: int = 0, max_classes: int = 20) -> dict:
    """Mean test balanced accuracy over one-vs-rest tasks: per k of sparse probes on features, and of the dense
    probe. Also per class, and which features the k=1 probe chose."""
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise InterpError(f"probing needs at least two labels, the texts have {len(classes)} "
                          f"({classes[0] if classes else 'none'!r}): label texts of several classes")
    if len(classes) > max_classes:
        raise InterpError(f"{len(classes)} labels: probing takes at most {max_classes}; group them")
    train, test = split(labels, test_fraction, seed)
    if not test:
        raise InterpError("too few texts to hold any out for testing: give at least two texts per label")
    lab = list(labels)
    tasks = classes if len(classes) > 2 else classes[:1]
    per_class: dict[str, dict] = {}
    for c in tasks:
        y = torch.tensor([v == c for v in lab])
        ytr, yte = y[train], y[test]
        if ytr.all() or not ytr.any() or yte.all() or not yte.any():
            continue
        feats_tr, feats_te = pooled.mean[train], pooled.mean[test]
        row: dict = {"dense": _probe(pooled.raw[train], ytr, pooled.raw[test], yte)}
        for k in ks:
            cols = top_k_by_mean_diff(feats_tr, ytr, k)
            row[f"k={k}"] = _probe(feats_tr[:, cols], ytr, feats_te[:, cols], yte)
            if k == 1:
                row["k1_feature"] = int(cols[0])
        per_class[c] = row
    if not per_class:
        raise InterpError("no class has texts on both sides of the train/test split: give more texts per label")
    keys = ["dense"] + [f"k={k}" for k in ks]
    mean = {key: sum(r[key] for r in per_class.values()) / len(per_class) for key in keys}
    return {"texts": len(lab), "train": len(train), "test": len(test), "classes": classes, "mean": mean,
            "per_class": per_class}
