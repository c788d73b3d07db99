"""Fixtures of the tests/deploy/test_kubernetes_*.py modules: each overlay, rendered.

Every check of those modules runs once per overlay, against what `kubectl kustomize`
renders and the Settings a process of that overlay would build.
"""

from __future__ import annotations

import pytest

from shared.settings import Settings, known_environment_variables
from tests.deploy import k8s_support as k8s
from tests.deploy.k8s_support import Manifest


@pytest.fixture(params=k8s.OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    """Each overlay in turn: every check holds for dev and for prod."""
    name: str = request.param
    return name


@pytest.fixture
def objects(overlay: str) -> tuple[Manifest, ...]:
    """The rendered objects of the overlay."""
    return k8s.render(overlay)


@pytest.fixture
def settings(objects: tuple[Manifest, ...], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a crm process of this overlay builds: its ConfigMap plus stand-in secrets."""
    for name in known_environment_variables():
        monkeypatch.delenv(name, raising=False)
    data = k8s.settings_data(objects)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CRM_DATABASE_URL", "postgresql+asyncpg://crm:stand-in@db:5432/crm")
    signing = data["CRM_JWT_SIGNING_KEY_ID"]
    monkeypatch.setenv("CRM_JWT_KEYS", f'{{"{signing}": "stand-in-key-of-32-bytes-or-more!!"}}')
    return Settings(_env_file=None)
