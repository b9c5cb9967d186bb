"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPORA = REPO.parent / "shared" / "corpora"


@pytest.fixture
def corpora() -> Path:
    """../shared/corpora, or a clean skip where it is not beside the repository."""
    if not SHARED_CORPORA.is_dir():
        pytest.skip("../shared/corpora is not beside the repository")
    return SHARED_CORPORA
