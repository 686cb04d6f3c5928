"""Work inside a network namespace without moving the calling thread.

A namespace switch (setns) applies to one thread only, so each piece of work runs on a
short-lived thread of its own that enters the namespace first and ends with the work:
no other thread of the agent ever sees a changed namespace, and nothing has to be
switched back. Sockets keep the namespace they were created in, which is how a netlink
socket for another namespace is made (much cheaper than pyroute2's forked helper).
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable, Iterator
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


def inside(path: str | None, work: Callable[[], T]) -> T:
    """`work()` run inside the namespace at `path` (None: the caller's own)."""
    if path is None:
        return work()
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            if _libc.setns(descriptor, CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"cannot enter network namespace {path}: {os.strerror(code)}")
            outcome.append(work())
        except BaseException as error:
            failure.append(error)

    try:
        thread = threading.Thread(target=run, name="knm-netns", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(descriptor)
    if failure:
        raise failure[0]
    return outcome[0]


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
