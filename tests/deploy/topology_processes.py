"""The processes of the production topology test: configured, started and watched.

Everything here is what the manifests and the operations guide describe, done with real
`crm` processes: the environment the ConfigMap and Secret give, the migrate Job, the API
and worker Deployments, the probes and metrics the kubelet and Prometheus would read, and
what the Kafka broker says about the consumer groups.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from aiokafka.admin import AIOKafkaAdminClient

from shared.auth import Scope, issue_token
from shared.settings import SERVICE_NAMES, Settings
from tests.support.broker import Broker
from tests.support.processes import CRM, Child, ProcessGroup, eventually, free_port, wait_for_http

GRACE_SECONDS = 5.0
GRACE_MARGIN = 2.0  # interpreter exit and closing sockets, after the grace period
PARTITIONS = 4
LOYALTY_TOPICS = ("crm.contacts", "crm.purchases", "crm.referrals")  # its group's topics
KEYS = {"2026-06": secrets.token_urlsafe(32), "2026-12": secrets.token_urlsafe(32)}
SIGNING_KID = "2026-12"


def environment(database_url: str, broker: Broker, data_dir: Path) -> dict[str, str]:
    """What the ConfigMap and Secret give every process (the manifests' variable names)."""
    return {
        "CRM_TRANSPORT": "kafka",
        "CRM_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "CRM_KAFKA_CREATE_TOPICS": "false",
        "CRM_KAFKA_PARTITIONS": str(PARTITIONS),
        # A SIGKILLed member leaves the group when its session lapses; keep that short.
        "CRM_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "CRM_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "CRM_DATABASE_URL": database_url,
        "CRM_DATABASE_POOL_SIZE": "3",
        "CRM_JWT_KEYS": json.dumps(KEYS),
        "CRM_JWT_SIGNING_KEY_ID": SIGNING_KID,
        "CRM_PUBLIC_BASE_URL": "https://crm.example.com",
        "CRM_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "CRM_DATA_DIR": str(data_dir),
        "CRM_LOG_JSON": "true",
        "CRM_RELAY_IDLE_POLL_INTERVAL_SECONDS": "0.05",
    }


def token(scope: Scope, store: str | None = None, kid: str = SIGNING_KID) -> dict[str, str]:
    """A bearer header signed with one of the deployment's keys, as `crm token issue` does."""
    settings = Settings(jwt_keys=KEYS, jwt_signing_key_id=kid)
    issued = issue_token(settings, subject=f"{scope.value}-{store}", scopes=[scope], store_id=store)
    return {"Authorization": f"Bearer {issued}"}


async def migrate_and_create_topics(group: ProcessGroup, env: dict[str, str]) -> None:
    """The migrate Job: two migrations at once (a re-run racing a roll-out), and the topics."""
    jobs = [
        group.run("migrate-1", [*CRM, "migrate"], env, timeout=60),
        group.run("migrate-2", [*CRM, "migrate"], env, timeout=60),
        group.run("topics-ensure", [*CRM, "topics", "ensure"], env, timeout=60),
    ]
    finished = await asyncio.gather(*jobs)
    for job in finished:
        assert job.process.returncode == 0, job.tail()
    listed = finished[-1].output()
    for topic in ("crm.contacts", "crm.purchases", "crm.loyalty", "crm.dead-letters"):
        assert f"created: {topic}" in listed, listed
    admin = AIOKafkaAdminClient(bootstrap_servers=env["CRM_KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    try:
        described = await admin.describe_topics(list(LOYALTY_TOPICS))
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == dict.fromkeys(
        LOYALTY_TOPICS, PARTITIONS
    )


SAMPLE = re.compile(r"(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)")


@dataclass
class Worker:
    """A `crm worker` process and the probe port its pod would expose as `metrics`."""

    service: str
    child: Child
    probes: str

    async def metrics(self, http: httpx.AsyncClient) -> dict[tuple[str, str], float]:
        """Its Prometheus samples, by (name, labels as written)."""
        response = await http.get(f"{self.probes}/metrics")
        assert response.status_code == 200, response.text
        samples = {}
        for line in response.text.splitlines():
            if found := SAMPLE.fullmatch(line):
                samples[found["name"], found["labels"] or ""] = float(found["value"])
        return samples


async def start_worker(
    group: ProcessGroup, env: dict[str, str], http: httpx.AsyncClient, service: str, name: str
) -> Worker:
    """Start a worker with its own probe port and wait until its liveness probe answers."""
    port = free_port()
    child = group.start(name, [*CRM, "worker", service], {**env, "CRM_METRICS_PORT": str(port)})
    worker = Worker(service, child, f"http://127.0.0.1:{port}")
    await wait_for_http(http, f"{worker.probes}/healthz", child, timeout=75)
    return worker


async def bring_up(
    group: ProcessGroup, env: dict[str, str], http: httpx.AsyncClient
) -> tuple[dict[str, str], dict[str, list[Worker]]]:
    """Start the five APIs and six workers; answer the API base URLs and the workers."""
    apis: dict[str, str] = {}
    servers: dict[str, Child] = {}
    for service in SERVICE_NAMES:
        port = free_port()
        serve_env = {**env, "CRM_HOST": "127.0.0.1", "CRM_PORT": str(port)}
        servers[service] = group.start(f"serve-{service}", [*CRM, "serve", service], serve_env)
        apis[service] = f"http://127.0.0.1:{port}"
    names = [(s, f"worker-{s}") for s in SERVICE_NAMES] + [("loyalty", "worker-loyalty-2")]
    started, _ = await asyncio.gather(
        asyncio.gather(*(start_worker(group, env, http, s, name) for s, name in names)),
        asyncio.gather(
            *(
                wait_for_http(http, f"{apis[s]}/v1/{s}/readyz", servers[s], timeout=75)
                for s in SERVICE_NAMES
            )
        ),
    )
    workers: dict[str, list[Worker]] = {}
    for (service, _), worker in zip(names, started, strict=True):
        workers.setdefault(service, []).append(worker)
    return apis, workers


async def workers_drained(http: httpx.AsyncClient, workers: list[Worker]) -> str | None:
    """None when every live worker sees its outbox empty and dead-lettered nothing."""
    for worker in workers:
        if not worker.child.running():
            continue
        samples = await worker.metrics(http)
        own = f'schema="{worker.service}"'  # each service's schema is named after it
        backlog = samples.get(("crm_outbox_oldest_unpublished_age_seconds", own))
        if backlog != 0:
            return f"{worker.child.name}: oldest unpublished outbox row {backlog} s old"
        for (name, labels), value in samples.items():
            if name == "crm_events_consumed_total" and "dead_lettered" in labels and value:
                return f"{worker.child.name}: {name}{{{labels}}} {value}"
    return None


async def group_members(bootstrap: str, group: str) -> tuple[str, int]:
    """The state of a consumer group and how many members it has, as the broker says."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    _, _, state, _, _, members = response.groups[0]
    return str(state), len(members)


async def group_has(bootstrap: str, group: str, members: int, what: str) -> None:
    """Wait until the broker calls `group` Stable with exactly `members` members."""

    async def settled() -> str | None:
        found = await group_members(bootstrap, group)
        return None if found == ("Stable", members) else f"{group} is {found}"

    began = time.monotonic()
    await eventually(settled, 30, what)
    print(f"{what}: {time.monotonic() - began:.1f} s")


def no_errors_logged(group: ProcessGroup) -> None:
    """Nothing failed quietly: no process logged an error or a traceback."""
    for child in group.children:
        for line in child.output().splitlines():
            failed = '"level": "error"' in line or '"level": "critical"' in line
            assert not failed and "Traceback" not in line, f"{child.name}: {line}"
