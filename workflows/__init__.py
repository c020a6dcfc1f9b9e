"""Workflows that join the registry and mdl.core (the CLI commands stay thin wrappers over these)."""
