"""The scoring tests run against the scoring service (see tests/services/conftest.py)."""

from __future__ import annotations

import pytest

from services.scoring import SERVICE
from shared.service import ServiceDefinition


@pytest.fixture
def service() -> ServiceDefinition:
    return SERVICE
