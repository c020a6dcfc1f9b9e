"""Workflows that join the registry and mdl_core (the CLI commands stay thin wrappers over these)."""
