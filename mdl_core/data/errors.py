"""The one exception type of the data layer."""
from __future__ import annotations


class DataError(ValueError):
    """Bad input data: a missing path, a malformed annotation file, a label outside the categories,
    an empty class folder, an undecodable image. The message is one line and names the path/problem."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(" ".join(str(message).split()))
        self.hint = hint
