"""Registry failures a user can act on; each message is one line, `hint` names the next command."""
from __future__ import annotations


class RegistryError(Exception):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class NotInitialised(RegistryError):
    pass


class SchemaMismatch(RegistryError):
    pass


class NotFound(RegistryError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class IntegrityFailure(RegistryError):
    """An artifact is missing or its bytes do not hash to what the registry recorded."""
