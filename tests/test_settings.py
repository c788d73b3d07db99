"""Settings come from CRM_ variables; a service's own database URL wins over the common one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import Settings


def test_prefix_and_per_service_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_DATABASE_URL", "postgresql+asyncpg://common/db")
    monkeypatch.setenv("CRM_LOYALTY_DATABASE_URL", "postgresql+asyncpg://loyalty/db")
    monkeypatch.setenv("CRM_TRANSPORT", "kafka")
    settings = Settings()
    assert settings.transport == "kafka"
    assert settings.database_url_for("loyalty") == "postgresql+asyncpg://loyalty/db"
    assert settings.database_url_for("contacts") == "postgresql+asyncpg://common/db"


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TRANSPORT", "carrier-pigeon")
    with pytest.raises(ValidationError, match="transport"):
        Settings()


def test_embedded_default_when_no_url() -> None:
    assert Settings(database_url=None).database_url_for("scoring") is None
