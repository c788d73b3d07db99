"""Fixtures and facts shared by the tests/deploy/test_kubernetes_*.py modules.

Each test module imports the fixtures it uses from here, so no conftest is needed. A
fixture's function is named `<name>_fixture` and registered under `name`: a test's
parameter `objects` then does not shadow an imported name `objects` (ruff F811).
"""

from __future__ import annotations

import pytest

from crm.services import ALL_SERVICES
from shared.settings import Settings, known_environment_variables
from tests.deploy import k8s_support as k8s
from tests.deploy.k8s_support import Manifest

SERVICES = tuple(service.name for service in ALL_SERVICES)
CONSUMING = frozenset({"loyalty", "referrals", "scoring", "messaging"})  # contacts: relay only

needs_kubectl = pytest.mark.skipif(
    k8s.kubectl() is None, reason="kubectl is not installed: the overlays cannot be rendered"
)


@pytest.fixture(name="overlay", params=k8s.OVERLAYS)
def overlay_fixture(request: pytest.FixtureRequest) -> str:
    """Each overlay in turn: every check holds for dev and for prod."""
    name: str = request.param
    return name


@pytest.fixture(name="objects")
def objects_fixture(overlay: str) -> tuple[Manifest, ...]:
    """The rendered objects of the overlay."""
    return k8s.render(overlay)


@pytest.fixture(name="settings")
def settings_fixture(objects: tuple[Manifest, ...], monkeypatch: pytest.MonkeyPatch) -> Settings:
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
