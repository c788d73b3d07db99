"""The `crm` command: the composition root that wires the five services together."""
