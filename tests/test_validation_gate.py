"""The FP16 top-1 gate judges decisive samples only: near-ties pass, a wrong head fails.

FP16 logits differ from FP32 by a few thousandths of their spread (see
``Thresholds.for_precision``); a sample whose FP32 top-1 margin is smaller than that can
flip in a correct engine, so the gate must not read it. These tests build logits with
known margins and errors, so each verdict is decided by the rule, not by a model's luck.
"""
from __future__ import annotations

import numpy as np

from twins_deploy.engines.validation import Thresholds, ValidationReport, compare_outputs, decisive_rows, judge

FP16 = Thresholds.for_precision("fp16")


def _logits(n: int = 41, classes: int = 1000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, classes)).astype(np.float32)


def _with_margin(ref: np.ndarray, row: int, margin_std: float) -> None:
    """Make ``row``'s top-1 exceed its top-2 by ``margin_std`` standard deviations."""
    r = ref[row]
    order = np.argsort(r)
    r[order[-1]] = r[order[-2]] + margin_std * r.std()


def _judged(ref: np.ndarray, got: np.ndarray, th: Thresholds = FP16) -> ValidationReport:
    report = ValidationReport("ref", "cand", "fp16", th)
    report.stats.append(compare_outputs("random", "logits", ref, got, th.top1_margin))
    judge(report)
    return report


def _flip(got: np.ndarray, ref: np.ndarray, row: int) -> None:
    """Swap ``row``'s top-1 and top-2 values in ``got``."""
    a, b = np.argsort(ref[row])[-2:]
    got[row, a], got[row, b] = got[row, b], got[row, a]


def test_fp16_noise_flipping_a_near_tie_passes():
    """One near-tie (margin 0.002 std) flipped by FP16-sized noise: 40/41 = 97.6% overall,
    which the old 99%-of-all gate failed; the sample is not decisive, so the engine passes."""
    ref = _logits()
    for row in range(len(ref)):
        _with_margin(ref, row, 0.3)
    _with_margin(ref, 7, 0.002)
    got = ref + np.random.default_rng(1).normal(0, 0.0005, ref.shape).astype(np.float32)
    _flip(got, ref, 7)
    report = _judged(ref, got)
    assert report.top1_agreement() < 0.99  # all samples: one flip
    assert not decisive_rows(ref, FP16.top1_margin)[7]
    assert report.passed, report.failures
    assert report.to_dict()["top1_judged"] == 1.0 and report.to_dict()["decisive_samples"] == 40


def test_a_wrong_head_fails_on_decisive_samples_even_with_a_high_cosine():
    """A candidate that swaps top-1 and top-2 where the margin is large (a label-order bug):
    every cosine stays above 0.999, only the decisive top-1 gate can catch it."""
    ref = _logits()
    for row in range(len(ref)):
        _with_margin(ref, row, 0.3)
    got = ref.copy()
    for row in range(0, len(ref), 4):
        _flip(got, ref, row)
    report = _judged(ref, got)
    assert min(s.min_cosine for s in report.stats) > FP16.min_cosine
    assert not report.passed
    assert any("decisive samples" in f and "11 of 41" in f for f in report.failures), report.failures


def test_a_single_decisive_flip_fails():
    ref = _logits()
    _with_margin(ref, 3, 0.5)
    got = ref.copy()
    _flip(got, ref, 3)
    assert not _judged(ref, got).passed


def test_margin_zero_judges_every_sample():
    """--top1-margin 0: every sample is decisive, so the near-tie flip counts again."""
    ref = _logits()
    _with_margin(ref, 7, 0.002)
    got = ref.copy()
    _flip(got, ref, 7)
    th = FP16.override(top1_margin=0.0)
    assert th.top1_margin == 0.0 and th.min_cosine == FP16.min_cosine  # other defaults kept
    assert not _judged(ref, got, th).passed


def test_no_decisive_sample_is_not_judged_but_reported():
    ref = np.zeros((4, 10), np.float32)  # all ties: nothing can be judged on top-1
    report = _judged(ref, ref.copy())
    assert report.passed and report.judged_top1() is None and report.decisive_counts() == (0, 0)
