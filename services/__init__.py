"""The five services; each package exposes a `SERVICE` definition."""
