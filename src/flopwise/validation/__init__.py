"""Validation of flopwise's estimates against published real-world measurements.

``run_validation()`` estimates every case in ``data/cases_*.csv`` with default assumptions and reports each
case's relative error and, per category, the median and 90th-percentile absolute relative error.
``flopwise.validation.calibrate`` fits the estimator's calibrated constants and reports their leave-one-out
errors (``python -m flopwise.validation.calibrate``). See ``README.md`` in this folder for the sources.
"""

from flopwise.validation.runner import (
    CATEGORIES,
    DATA_DIR,
    LOO_MEDIAN_BOUNDS,
    MEDIAN_BOUNDS,
    CaseResult,
    CategorySummary,
    FailedCase,
    SkippedCase,
    ValidationCase,
    ValidationReport,
    load_cases,
    percentile,
    run_validation,
    summarize,
)

__all__ = [
    "CATEGORIES",
    "DATA_DIR",
    "LOO_MEDIAN_BOUNDS",
    "MEDIAN_BOUNDS",
    "CaseResult",
    "CategorySummary",
    "FailedCase",
    "SkippedCase",
    "ValidationCase",
    "ValidationReport",
    "load_cases",
    "percentile",
    "run_validation",
    "summarize",
]
