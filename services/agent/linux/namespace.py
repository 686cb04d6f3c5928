"""Work done inside one network namespace, from a process that stays outside it.

Netlink sockets and nftables commands act on the namespace of the thread that opens or
runs them, and entering a namespace is per thread: so each node namespace gets one
thread that enters it once and runs everything meant for it. On a real node the agent
lives in the node's namespace already and the thread simply does not move.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pyroute2 import netns as namespaces

T = TypeVar("T")


class NamespaceThread:
    def __init__(self, netns: str | None, *, name: str) -> None:
        self.netns = netns
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name, initializer=self._enter
        )

    def _enter(self) -> None:
        if self.netns is not None:
            # flags=0: the namespace must exist; creating one is the lab's job, not ours.
            namespaces.setns(self.netns, flags=0)

    def run(self, work: Callable[[], T]) -> T:
        return self._executor.submit(work).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
