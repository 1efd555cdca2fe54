"""A small generic name -> object registry with helpful errors for unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pfnkit.exceptions import InvalidConfigError, UnknownNameError

T = TypeVar("T")


def closest(name: str, options: list[str]) -> str | None:
    """The option most similar to ``name``, or None when nothing is close."""
    hits = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return hits[0] if hits else None


def unknown_message(kind: str, name: str, options: list[str]) -> str:
    """'Unknown prior 'gpp'. Known: bnn, gp. Did you mean 'gp'?'"""
    msg = f"Unknown {kind} {name!r}. Known: {', '.join(sorted(options)) or '(none)'}."
    hint = closest(name, options)
    if hint is not None:
        msg += f" Did you mean {hint!r}?"
    return msg


class Registry(Generic[T]):
    """Maps names to objects (classes or factories) of one kind.

    Registering a different object under a taken name raises; re-registering the same
    object is a no-op so that module reloads stay harmless.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj`` works as a decorator."""

        def _add(item: T) -> T:
            taken = self._items.get(name)
            if taken is not None and taken is not item:
                raise InvalidConfigError(
                    f"The {self.kind} name {name!r} is already registered to {taken!r}; "
                    "choose another name."
                )
            self._items[name] = item
            return item

        if obj is None:
            return _add
        return _add(obj)

    def get(self, name: str) -> T:
        """The object registered under ``name``; unknown names list what exists."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(unknown_message(self.kind, name, list(self._items))) from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
