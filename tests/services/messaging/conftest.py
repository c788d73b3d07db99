"""The messaging tests run against the messaging service (see tests/services/conftest.py)."""

from __future__ import annotations

import pytest

from services.messaging import SERVICE
from shared.service import ServiceDefinition


@pytest.fixture
def service() -> ServiceDefinition:
    return SERVICE
