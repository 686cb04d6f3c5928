"""Work inside a network namespace from a process that stays outside it.

Netlink sockets and nftables commands act on the namespace of the thread that opens or
runs them, and a namespace switch (setns) applies to one thread only: so work for a
namespace runs on a thread that entered it, either one kept per namespace
(`NamespaceThread`) or one made for the work and ended with it (`inside`). No other
thread ever sees a changed namespace, and nothing has to be switched back. Sockets keep
the namespace they were created in, which is how a netlink socket for another
namespace is made (much cheaper than pyroute2's forked helper).
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from pyroute2 import IPRoute

# From <sched.h>: setns(2) for a network namespace.
CLONE_NEWNET = 0x40000000
# From <linux/netlink.h>: the routing family of netlink sockets.
NETLINK_ROUTE = 0
# Where iproute2 (and so `ip netns add`) keeps named namespaces.
NETNS_RUN_DIR = "/var/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)

T = TypeVar("T")


def netns_path(netns: str) -> str:
    """A namespace's file: a name as `ip netns` knows it, or already a path."""
    return netns if "/" in netns else os.path.join(NETNS_RUN_DIR, netns)


class NamespaceThread:
    """One thread that enters a namespace once and runs everything meant for it, for
    work that keeps state made inside it (a libnftables context, a netlink socket).

    `netns` is a name (as `ip netns` knows it) or a path; making the namespace is the
    lab's or the runtime's job. On a real node the agent lives in
    the node's namespace already: with `netns` None the thread simply does not move.
    """

    def __init__(self, netns: str | None, *, name: str) -> None:
        self.netns = netns
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        # Entered on first use, and tried again on the next if the namespace was not
        # there yet: a node's namespace may come after the process that serves it.
        self._entered = netns is None
        self._entering = threading.Lock()

    def run(self, work: Callable[[], T]) -> T:
        if not self._entered:
            with self._entering:
                if not self._entered:
                    assert self.netns is not None
                    self._executor.submit(enter, netns_path(self.netns)).result()
                    self._entered = True
        return self._executor.submit(work).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def enter(path: str) -> None:
    """Move the calling thread into the namespace at `path`."""
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(descriptor, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"cannot enter network namespace {path}: {os.strerror(code)}")
    finally:
        os.close(descriptor)


def inside(path: str | None, work: Callable[[], T]) -> T:
    """`work()` run inside the namespace at `path` (a name or a path; None: the
    caller's own), on a thread of its own that ends with it."""
    if path is None:
        return work()
    thread = NamespaceThread(path, name="knm-netns")
    try:
        return thread.run(work)
    finally:
        thread.close()


@contextmanager
def routing(path: str | None) -> Iterator[Any]:
    """An rtnetlink connection (a pyroute2 `IPRoute`) to the namespace at `path`."""
    sock = inside(path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
    # groups=0: a connection for requests, not subscribed to the kernel's notifications.
    ipr = IPRoute(use_socket=sock, groups=0)
    try:
        yield ipr
    finally:
        ipr.close()


def read_sysctl(path: str | None, *, name: str) -> str:
    """A sysctl's value as the namespace at `path` sees it (`/proc/sys` is per namespace)."""

    def read() -> str:
        with open(_sysctl_file(name), encoding="ascii") as value:
            return value.read().strip()

    return inside(path, read)


def write_sysctl(path: str | None, *, name: str, value: str) -> None:
    def write() -> None:
        with open(_sysctl_file(name), "w", encoding="ascii") as target:
            target.write(value)

    inside(path, write)


def _sysctl_file(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")
