"""The referrals tests run against the referrals service (see tests/services/conftest.py)."""

from __future__ import annotations

import pytest

from services.referrals import SERVICE
from shared.service import ServiceDefinition


@pytest.fixture
def service() -> ServiceDefinition:
    return SERVICE
