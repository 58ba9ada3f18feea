"""Scoring arithmetic against hand-computed cases and brute force."""

from __future__ import annotations

import random

import pytest
import torch

from transcoders.interp.examples import Window, render, spread
from transcoders.interp.scoring import answer_auroc, auroc, balanced_accuracy, confusion, mean_ci, wrong_marks


def test_balanced_accuracy_by_hand():
    # 4 positives: 3 said yes; 2 negatives: 1 said yes -> TPR 3/4, TNR 1/2 -> 0.625
    truth = [True, True, True, True, False, False]
    p = [0.9, 0.6, 0.51, 0.2, 0.7, 0.1]
    assert confusion(truth, p) == {"tp": 3, "fn": 1, "tn": 1, "fp": 1}
    assert balanced_accuracy(truth, p) == pytest.approx(0.625)
    # exactly one half is "no"; an all-yes scorer is at chance whatever the class balance
    assert balanced_accuracy([True, False], [0.5, 0.5]) == pytest.approx(0.5)
    assert balanced_accuracy([True] * 9 + [False], [1.0] * 10) == pytest.approx(0.5)
    assert balanced_accuracy([True, True], [1.0, 0.0]) is None  # one class only


def test_auroc_matches_pair_counting_with_ties():
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 4, (7, 5), generator=g).float()  # small integers: many ties
    neg = torch.randint(0, 4, (9, 5), generator=g).float()
    got = auroc(pos, neg)
    for f in range(5):
        wins = sum((1.0 if p > n else 0.5 if p == n else 0.0) for p in pos[:, f] for n in neg[:, f])
        assert got[f].item() == pytest.approx(wins / 63)
    assert auroc(torch.ones(3, 1), torch.zeros(2, 1)).item() == 1.0
    assert auroc(torch.zeros(3, 1), torch.zeros(2, 1)).item() == 0.5


def test_mean_ci_brackets_the_mean():
    m, lo, hi = mean_ci([0.5, 0.6, 0.7, 0.8, 0.9] * 4)
    assert m == pytest.approx(0.7) and lo < m < hi and hi - lo < 0.2
    assert mean_ci([1.0, 1.0]) == (1.0, 1.0, 1.0)


def test_wrong_marks_are_silent_and_as_many():
    w = Window(0, 0, list(range(8)), [0, 2.0, 0, 0, 1.0, 0, 0, 0])
    marks = wrong_marks(w, random.Random(0))
    assert len(marks) == 2 and all(w.acts[i] == 0 for i in marks)
    assert wrong_marks(Window(0, 0, [1, 2], [1.0, 1.0]), random.Random(0)) is None  # no silent token to mark


def test_render_marks_runs_and_strengths():
    vocab = {1: "The", 2: " cat", 3: " sat", 4: " on", 5: "\n"}
    w = Window(0, 0, [1, 2, 3, 4, 5], [0, 3.0, 1.5, 0, 0])
    assert render(w, vocab) == "The <<cat sat>> on"
    assert render(w, vocab, values=True) == "The <<cat sat>>(9) on"
    assert render(w, vocab, marks=[3]) == "The cat sat <<on>>"
    assert render(w, vocab, marks=[]) == "The cat sat on"


def test_spread_is_even_and_keeps_ends():
    assert spread(list(range(10)), 3) == [0, 4, 9]
    assert spread([1, 2], 5) == [1, 2]
    assert spread(list(range(7)), 1) == [0]


def test_render_specials_and_line_breaks():
    vocab = {0: "<|im_start|>", 1: "Hi", 2: "\n", 3: " there", 4: "</s>"}
    w = Window(0, 0, [1, 0, 2, 3, 4], [0, 0, 1.0, 0, 0])
    assert render(w, vocab) == "Hi\\n<<\\n>> there"  # a separator reads as a line break, a marked one stays visible
    assert render(w, vocab, marks=[]) == "Hi\\n\\n there"


def test_render_strength_is_relative_to_the_strongest_shown():
    w = Window(0, 0, [1, 2], [0.0, 1.0])
    assert render(w, {1: "a", 2: " b"}, values=True, top=3.0) == "a <<b>>(3)"


def test_answer_auroc_sees_ranking_through_bias():
    # every answer below one half: balanced accuracy is chance, but the ranking is perfect
    truth, p = [True, True, False, False], [0.4, 0.3, 0.2, 0.1]
    assert balanced_accuracy(truth, p) == 0.5 and answer_auroc(truth, p) == 1.0
    assert answer_auroc([True, False], [0.3, 0.3]) == 0.5 and answer_auroc([True], [0.9]) is None
