"""Delivery machinery: transactional outbox, relay, transports and the consumer runner."""
