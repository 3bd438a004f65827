"""The validation verdict: what passes, what fails, and that the report is strict JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest

from twins_deploy.artifacts import write_json_atomic
from twins_deploy.engines.runners.base import Runner
from twins_deploy.engines.validation import Thresholds, validate


class Fixed(Runner):
    """Returns prepared outputs: the reference and candidate of a validation under test."""

    def __init__(self, name: str, out: np.ndarray) -> None:
        super().__init__()
        self.name, self.out, self.output_names = name, out, ["logits"]

    def _activate(self) -> None:
        return None

    def infer(self, x):
        return [self.out]


def _report(ref: np.ndarray, got: np.ndarray, precision: str = "fp32"):
    x = np.zeros((len(ref), 3, 32, 32), np.float32)
    return validate(Fixed("reference", ref), Fixed("candidate", got), [("case", x)], precision,
                    Thresholds.for_precision(precision))


LOGITS = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)


def test_equal_outputs_pass_and_small_errors_are_judged_by_precision():
    assert _report(LOGITS, LOGITS.copy()).passed
    assert not _report(LOGITS, LOGITS + 2e-4).passed  # fp32: max abs <= 1e-4
    assert _report(LOGITS, LOGITS + 2e-4, "fp16").passed  # fp16: cosine and top-1


def test_a_non_finite_reference_fails_even_when_the_candidate_is_finite():
    ref = LOGITS.copy()
    ref[1, 3] = np.nan
    report = _report(ref, LOGITS)
    assert not report.passed
    assert any("the PyTorch reference itself has 1 NaN/Inf" in f for f in report.failures)
    report = _report(np.full_like(LOGITS, np.inf), LOGITS, "fp16")
    assert not report.passed and "reference itself" in report.failures[0]


def test_a_non_finite_candidate_fails():
    got = LOGITS.copy()
    got[0, 0] = np.inf
    report = _report(LOGITS, got, "fp16")
    assert not report.passed and "1 NaN/Inf values" in report.failures[0]


def test_reports_with_infinities_are_strict_json(tmp_path):
    got = LOGITS.copy()
    got[0, 0] = np.nan
    report = _report(LOGITS, got).to_dict()
    assert report["stats"][0]["max_abs"] == float("inf")
    write_json_atomic(tmp_path / "r.json", report)
    data = json.loads((tmp_path / "r.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["stats"][0]["max_abs"] is None and data["passed"] is False
