"""HTTP conventions every service shares: the app factory, errors, idempotency, request ids."""
