"""Network namespaces for tests: unique names, removed afterwards whatever happened."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import netns

from services.agent.linux.namespaces import netns_path

PREFIX = "knmt-"


class Namespaces:
    """Creates `knmt-<run>-<name>` namespaces and removes every one it made."""

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:8]
        self.made: list[str] = []

    def make(self, name: str) -> str:
        """A new namespace; returns its path."""
        full = f"{PREFIX}{self.run}-{name}"
        netns.create(full)
        self.made.append(full)
        return netns_path(full)

    def name(self, path: str) -> str:
        return path.rsplit("/", 1)[-1]

    def remove(self, path: str) -> None:
        full = self.name(path)
        if full in self.made:
            self.made.remove(full)
            netns.remove(full)

    def close(self) -> None:
        for full in reversed(self.made):
            if full in netns.listnetns():
                netns.remove(full)
        self.made.clear()


@contextmanager
def namespaces() -> Iterator[Namespaces]:
    made = Namespaces()
    try:
        yield made
    finally:
        made.close()
