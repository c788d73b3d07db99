"""The loyalty tests run against the loyalty service (see tests/services/conftest.py)."""

from __future__ import annotations

import pytest

from services.loyalty import SERVICE
from shared.service import ServiceDefinition


@pytest.fixture
def service() -> ServiceDefinition:
    return SERVICE
