"""The platform every service stands on: settings, storage, events, HTTP conventions.

`shared` never imports `services`; services import `shared`, and the `crm` command wires
them together.
"""
