"""Named entries of one kind (strategies, searchers, datasets, formats, ...), looked up by name.

Every registry in nas_aug is one of these, so every unknown name gets the same error: it names
the value, suggests the closest registered name and lists them all.

>>> counters = Registry("MAC counter")
>>> @counters.register("fvcore")
... class Fvcore: ...
>>> counters.get("fvcore").__name__
'Fvcore'
>>> counters.get("fvcor")
Traceback (most recent call last):
...
ValueError: unknown MAC counter 'fvcor' (did you mean 'fvcore'?); choose one of ['fvcore']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .validation import closest_match

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> entry table for entries of one ``kind`` (the word used in its errors).

    >>> formats = Registry("format")
    >>> formats.add("onnx", ".onnx")
    '.onnx'
    >>> formats["onnx"], "onnx" in formats, formats.names("o*")
    ('.onnx', True, ['onnx'])
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """A decorator registering its target under ``name`` (default: the target's
        ``__name__``); a name registered twice raises."""
        def add(entry: T) -> T:
            return self.add(entry.__name__ if name is None else name, entry)
        return add

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a name registered twice raises."""
        if name in self._entries:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name raises ``ValueError``."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}{closest_match(name, self._entries)}"
                             f"; choose one of {self.names()}")
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching the shell-style ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
