"""`Secret`: a config value that must never be shown (a password, a private key)."""

from __future__ import annotations

__all__ = ["Secret"]


class Secret:
    """A secret config value. Its repr never shows the value, so it cannot leak into logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The plain value: only for building a `pulumi.Output.secret` or hashing."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(****)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
