"""The contacts tests run against the contacts service (see tests/services/conftest.py)."""

from __future__ import annotations

import pytest

from services.contacts import SERVICE
from shared.service import ServiceDefinition


@pytest.fixture
def service() -> ServiceDefinition:
    return SERVICE
