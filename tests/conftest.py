"""Shared test settings."""

import matplotlib
import pytest

matplotlib.use("Agg")  # tests draw figures without a screen


@pytest.fixture
def no_smoke(monkeypatch):
    """Tests of multi-epoch behaviour run outside smoke mode (which caps training at one epoch)."""
    monkeypatch.setenv("SMOKE_TEST", "0")
