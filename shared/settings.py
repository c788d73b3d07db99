"""Process-wide configuration, read from `CRM_`-prefixed environment variables.

One `Settings` instance is built per process by the entry point (the app factory or the
`crm` command) and passed down; nothing reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CRM_"

SERVICE_NAMES: tuple[str, ...] = ("contacts", "loyalty", "referrals", "scoring", "messaging")

REQUIRED_IN_PRODUCTION: tuple[str, ...] = (
    "CRM_DATABASE_URL",
    "CRM_TRANSPORT",
    "CRM_KAFKA_BOOTSTRAP_SERVERS",
    "CRM_JWT_KEYS",
    "CRM_JWT_SIGNING_KEY_ID",
    "CRM_PUBLIC_BASE_URL",
)
"""What every process of a multi-process deployment must be given.

The defaults of these suit one process on one box (`crm up`): an embedded database, the
PostgreSQL transport, a key generated into the data folder, links to localhost. Replicas
of a real deployment would each invent their own, so the manifests must set them.
"""

SECRET_ENVIRONMENT_VARIABLES: frozenset[str] = frozenset(
    {
        "CRM_DATABASE_URL",
        *(f"CRM_{service.upper()}_DATABASE_URL" for service in SERVICE_NAMES),
        "CRM_JWT_KEYS",
        "CRM_JWT_SECRET",
        "CRM_KAFKA_SASL_PASSWORD",
        "CRM_SMTP_PASSWORD",
        "CRM_MESSAGING_WEBHOOK_SECRET",
        "CRM_MESSAGING_PROVIDERS",
    }
)
"""Settings whose values are credentials (database URLs carry the password, providers their
tokens): deployments take them from a secret store, never from a manifest or an image."""


class Settings(BaseSettings):
    """All settings of a CRM process; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=Path(".crm"),
        description="Where the embedded PostgreSQL keeps its data and the JWT key is stored.",
    )
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL for every service; empty means the embedded server.",
    )
    contacts_database_url: str | None = None
    loyalty_database_url: str | None = None
    referrals_database_url: str | None = None
    scoring_database_url: str | None = None
    messaging_database_url: str | None = None
    database_pool_size: int = Field(default=10, ge=1)

    transport: Literal["postgres", "kafka"] = "postgres"
    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_create_topics: bool = True
    kafka_partitions: int = Field(default=4, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_retention_hours: float = Field(
        default=7 * 24,
        gt=0,
        description="Retention of the topics `crm topics ensure` creates (retention.ms).",
    )
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    kafka_fetch_max_wait_ms: int = Field(
        default=100, ge=1, description="How long a consumer's fetch waits for data."
    )
    eventlog_partitions: int = Field(default=4, ge=1, description="Postgres transport only.")
    eventlog_retention_hours: float = Field(
        default=7 * 24,
        gt=0,
        description="Postgres transport: events older than this leave the log, like Kafka's"
        " retention.ms; erased customers' published events go with them.",
    )

    relay_batch_size: int = Field(default=500, ge=1)
    relay_poll_interval_seconds: float = Field(default=0.02, gt=0)
    relay_idle_poll_interval_seconds: float = Field(default=0.2, gt=0)
    consumer_batch_size: int = Field(default=500, ge=1)
    consumer_max_attempts: int = Field(default=3, ge=1)
    consumer_retry_backoff_seconds: float = Field(default=0.2, ge=0)
    consumer_poll_interval_seconds: float = Field(default=1.0, gt=0)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)

    jwt_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key for bearer tokens; generated into the data folder when empty.",
    )
    jwt_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='HMAC keys by key id, as JSON: {"2026-12": "..."}; tokens name theirs in'
        " `kid`, so keys rotate without downtime. Overrides jwt_secret for signing.",
    )
    jwt_signing_key_id: str | None = Field(
        default=None, description="The key of jwt_keys that signs new tokens and links."
    )
    jwt_issuer: str = "crm"
    jwt_audience: str = "crm"
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    max_request_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest JSON request body; streamed uploads (text/csv) are exempt.",
    )

    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Where customers reach the API (links in confirmation and unsubscribe).",
    )
    contacts_default_region: str = Field(
        default="MY",
        pattern="^[A-Z]{2}$",
        description="Region for phone numbers written without a country code (MY, TH, ...).",
    )
    contacts_card_prefix: str = Field(
        default="88", pattern="^[0-9]{1,6}$", description="First digits of generated cards."
    )
    contacts_card_length: int = Field(default=12, ge=8, le=19)
    contacts_export_services: dict[str, str] = Field(
        default_factory=dict,
        description="Other services' base URLs whose GDPR export parts are gathered, "
        'as JSON: {"loyalty": "http://loyalty:8000"}.',
    )

    contacts_import_max_rows: int | None = Field(
        default=None, ge=1, description="Default 1,000,000."
    )
    contacts_import_max_bytes: int | None = Field(default=None, ge=1, description="Default 1 GiB.")
    contacts_import_batch_size: int | None = Field(
        default=None, ge=1, description="Rows per import transaction; default 5,000."
    )
    contacts_import_workers: int | None = Field(
        default=None, ge=0, description="Processes checking rows of big imports (0: a thread)."
    )
    contacts_import_process_threshold: int | None = Field(
        default=None, ge=0, description="Imports with more rows use the worker processes."
    )
    loyalty_return_window_days: int = Field(
        default=0, ge=0, le=365, description="Earned points stay pending this long."
    )
    loyalty_points_expiry_months: int = Field(
        default=12,
        ge=0,
        le=120,
        description="Points expire this long after they were earned (0: never).",
    )

    loyalty_points_expire_at_month_end: bool = Field(
        default=False, description="Round each lot's expiry up to the end of its month."
    )

    referrals_share_link_template: str = Field(
        default="https://example.com/join?ref={code}",
        description="The share link of a referral code; `{code}` is replaced by the code.",
    )
    referrals_code_grace_days: int = Field(
        default=90, ge=0, le=3650, description="A replaced code keeps working this long."
    )
    referrals_late_attribution_days: int = Field(
        default=14,
        ge=0,
        le=365,
        description="A code given after signup (at the till) counts this long after it.",
    )
    referrals_return_window_days: int = Field(
        default=14,
        ge=0,
        le=365,
        description="A refund this soon after the qualifying purchase can cancel the rewards.",
    )
    referrals_velocity_limit: int = Field(
        default=10, ge=1, description="More referrals than this by one referrer within..."
    )
    referrals_velocity_window_hours: int = Field(
        default=24, ge=1, le=720, description="...this many hours are held for review."
    )
    referrals_time_zone: str = Field(
        default="Asia/Kuala_Lumpur", description="The business's zone: monthly caps' months."
    )

    scoring_time_unit: Literal["days", "weeks"] = Field(
        default="weeks", description="The unit the models are fitted and reported in."
    )
    scoring_time_zone: str = Field(
        default="Asia/Kuala_Lumpur", description="Purchase days are counted in this zone."
    )
    scoring_horizon_days: int = Field(
        default=365, ge=1, le=3650, description="The horizon of `clv` and expected purchases."
    )
    scoring_margin: float = Field(
        default=0.3, gt=0, le=1, description="Share of spend that is profit, for CLV."
    )
    scoring_annual_discount_rate: float = Field(
        default=0.1, ge=0, le=1, description="Discount rate of future cash flows in CLV."
    )
    scoring_churn_bands: dict[str, float] = Field(
        default_factory=lambda: {"low": 0.0, "medium": 0.3, "high": 0.6},
        description="Churn band names by their lowest churn risk (1 - P(alive)).",
    )
    scoring_refit_interval_seconds: int = Field(
        default=86_400, ge=60, description="How often the models are refitted (daily)."
    )
    scoring_clv_change_threshold: float = Field(
        default=0.1,
        ge=0,
        description="Relative CLV change that makes a `customer.scored` event worth sending.",
    )

    smtp_host: str = Field(default="127.0.0.1", description="Outgoing mail server.")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        default="none", description="none, STARTTLS after connecting, or implicit TLS."
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = Field(
        default="Our shop <hello@example.com>", description="The From header of emails."
    )
    smtp_concurrency: int = Field(default=16, ge=1, le=256, description="SMTP sessions at once.")
    messaging_providers: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="HTTP providers by channel (sms, whatsapp, line, webhook): "
        '{"sms": {"url": "...", "token": "..."}}.',
    )
    messaging_webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key signing outgoing webhooks."
    )
    messaging_time_zone: str = Field(
        default="Asia/Kuala_Lumpur", description="The business's zone (schedules, reports)."
    )
    messaging_quiet_hours: tuple[int, int] = Field(
        default=(21, 9), description="No sends from this hour to that one, recipient's time."
    )
    messaging_frequency_caps: dict[str, tuple[int, int]] = Field(
        default_factory=lambda: {"email": (3, 7), "sms": (2, 7), "whatsapp": (2, 7)},
        description="Per channel: at most N marketing messages in D days.",
    )
    messaging_attribution_days: int = Field(
        default=7, ge=1, le=90, description="A purchase this soon after a message converts."
    )

    metrics_port: int = Field(
        default=9100,
        ge=0,
        le=65535,
        description="`crm worker` serves /metrics and /healthz on this port (0: off).",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "INFO"
    log_json: bool = True

    @model_validator(mode="after")
    def _signing_key_is_known(self) -> Settings:
        """A key ring must say which key signs, and that key must be in it."""
        if self.jwt_signing_key_id is not None and self.jwt_signing_key_id not in self.jwt_keys:
            raise ValueError(
                f"CRM_JWT_SIGNING_KEY_ID {self.jwt_signing_key_id!r} is not a key id of"
                " CRM_JWT_KEYS"
            )
        if len(self.jwt_keys) > 1 and self.jwt_signing_key_id is None:
            raise ValueError("CRM_JWT_KEYS holds several keys: set CRM_JWT_SIGNING_KEY_ID")
        return self

    def database_url_for(self, service: str) -> str | None:
        """The URL a service uses: its own override, else the common one."""
        override: str | None = getattr(self, f"{service}_database_url", None)
        return override or self.database_url


def known_environment_variables() -> frozenset[str]:
    """Every environment variable a `Settings` reads; manifests may set no other `CRM_` name."""
    return frozenset(ENV_PREFIX + name.upper() for name in Settings.model_fields)
