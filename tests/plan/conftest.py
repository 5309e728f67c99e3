"""Fixtures shared by the planner tests: the built-in catalog and model registry, loaded once per module."""

from __future__ import annotations

import pytest

from flopwise.catalog import load_catalog
from flopwise.models import load_models


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def models():
    return load_models()
