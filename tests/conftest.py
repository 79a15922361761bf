"""Shared fixtures. Capability fixtures live in their own modules, registered here."""

pytest_plugins = ["tests.pg"]
