"""Address arithmetic: pools, per-node blocks, the first free address, MACs and veth names."""

from __future__ import annotations

import hashlib
from collections.abc import Container
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network
from typing import Protocol

from knm.core.domain.model import QuarantineRecord


class PoolExhaustedError(Exception):
    """No address (or no block) is left in any pool."""


class QuarantineLookup(Protocol):
    def get(self, key: IPv4Address, /) -> QuarantineRecord | None: ...


def block_count(pool: IPv4Network, prefix: int) -> int:
    return 1 << (prefix - pool.prefixlen)


def block_at(pool: IPv4Network, prefix: int, index: int) -> IPv4Network:
    size = 1 << (32 - prefix)
    return IPv4Network((int(pool.network_address) + index * size, prefix))


def block_index(pool: IPv4Network, block: IPv4Network) -> int:
    return (int(block.network_address) - int(pool.network_address)) >> (32 - block.prefixlen)


def pool_of(ip: IPv4Address, pools: tuple[IPv4Network, ...]) -> IPv4Network | None:
    for pool in pools:
        if ip in pool:
            return pool
    return None


def is_reserved(ip: IPv4Address, pool: IPv4Network) -> bool:
    """A pool's own network and broadcast addresses are never handed out."""
    return pool.prefixlen < 31 and ip in (pool.network_address, pool.broadcast_address)


def is_available(
    ip: IPv4Address,
    *,
    taken: Container[IPv4Address],
    quarantine: QuarantineLookup,
    now: datetime,
) -> bool:
    if ip in taken:
        return False
    held = quarantine.get(ip)
    return held is None or held.until <= now


def first_free(
    block: IPv4Network,
    *,
    pool: IPv4Network,
    taken: Container[IPv4Address],
    quarantine: QuarantineLookup,
    now: datetime,
    start: int = 0,
) -> IPv4Address | None:
    """The lowest address of `block` (from offset `start`) that is free and out of quarantine."""
    base = int(block.network_address)
    for offset in range(start, block.num_addresses):
        ip = IPv4Address(base + offset)
        if is_reserved(ip, pool):
            continue
        if is_available(ip, taken=taken, quarantine=quarantine, now=now):
            return ip
    return None


def mac_for(ip: IPv4Address) -> str:
    """A locally administered MAC derived from the address, so it is stable and unique."""
    return "0a:58:" + ":".join(f"{octet:02x}" for octet in ip.packed)


def host_ifname(pod_uid: str) -> str:
    """The host-side veth name: at most 15 characters, stable for the pod's life."""
    return "knm" + hashlib.sha256(pod_uid.encode()).hexdigest()[:11]
