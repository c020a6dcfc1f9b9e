"""Text for messages, which every layer may import (no torch, no database)."""
from __future__ import annotations


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception's message cut to its first line (at most ``limit`` characters), for one-line errors
    built from libraries that explain at length; the exception's type name when it says nothing."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
