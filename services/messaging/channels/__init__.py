"""Delivery channels behind one interface (`base.Channel`): email, HTTP providers, webhooks."""

from __future__ import annotations

from services.messaging.channels.base import Channel, Message, Outcome, Result
from services.messaging.channels.email import SmtpChannel
from services.messaging.channels.http_provider import HttpProviderChannel
from services.messaging.channels.webhook import WebhookChannel
from shared.settings import Settings

__all__ = [
    "Channel",
    "HttpProviderChannel",
    "Message",
    "Outcome",
    "Result",
    "SmtpChannel",
    "WebhookChannel",
    "from_settings",
]

HTTP_CHANNELS = ("sms", "whatsapp", "line", "push")


def from_settings(settings: Settings) -> dict[str, Channel]:
    """Every channel the deployment configures: email always, the others when given."""
    channels: dict[str, Channel] = {"email": SmtpChannel(settings)}
    for name in HTTP_CHANNELS:
        provider = settings.messaging_providers.get(name)
        if provider and provider.get("url"):
            channels[name] = HttpProviderChannel(name, provider["url"], provider.get("token"))
    webhook = settings.messaging_providers.get("webhook")
    if webhook and webhook.get("url") and settings.messaging_webhook_secret is not None:
        channels["webhook"] = WebhookChannel(
            webhook["url"], settings.messaging_webhook_secret.get_secret_value()
        )
    return channels
