"""Address pools: capacity, used, quarantined and free, per pool and per node block."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network

from sqlalchemy import Connection, func, select

from knm.core.domain.addresses import block_count, is_reserved, pool_of
from knm.core.store.schema import BlockRow, PodRow, QuarantineRow, ServiceRow, table
from services.audit.models import BlockUsage, PoolKind, Pools, PoolUsage

blocks = table(BlockRow)
pods = table(PodRow)
services = table(ServiceRow)
quarantine = table(QuarantineRow)


def capacity(network: IPv4Network, *, pool: IPv4Network) -> int:
    """Addresses of `network` (a pool, or a block of it) that can be handed out: all but
    the pool's own network and broadcast addresses."""
    reserved = sum(
        1
        for ip in (pool.network_address, pool.broadcast_address)
        if ip in network and is_reserved(ip, pool)
    )
    return network.num_addresses - reserved


def pool_usage(
    connection: Connection,
    *,
    pod_pools: Sequence[IPv4Network],
    service_pools: Sequence[IPv4Network],
    block_prefix: int,
    now: datetime,
    public_pools: Sequence[IPv4Network] = (),
) -> Pools:
    """Quarantine lines whose time is up count as free: the allocator drops them lazily.

    Pod pools are the configured ones and any that blocks still come from; VIPs the
    cluster chose outside every service pool are in no pool and not counted."""
    claimed = connection.execute(select(blocks)).all()
    per_block: Counter[str] = Counter(
        dict(
            connection.execute(
                select(pods.c.block, func.count())
                .where(pods.c.ip.is_not(None), pods.c.block.is_not(None))
                .group_by(pods.c.block)
            ).all()
        )
    )
    held = [
        IPv4Address(ip)
        for (ip,) in connection.execute(select(quarantine.c.ip).where(quarantine.c.until > now))
    ]
    vips = [
        IPv4Address(vip)
        for (vip,) in connection.execute(select(services.c.vip).where(services.c.vip.is_not(None)))
    ]
    public = [
        IPv4Address(ip)
        for (ip,) in connection.execute(
            select(services.c.public_ip).where(services.c.public_ip.is_not(None))
        )
    ]
    public_pool_list = list(public_pools)
    pod_pool_list = list(dict.fromkeys([*pod_pools, *(IPv4Network(row.pool) for row in claimed)]))
    service_pool_list = list(service_pools)

    block_rows: list[BlockUsage] = []
    pool_used: Counter[IPv4Network] = Counter()
    pool_blocks: Counter[IPv4Network] = Counter()
    held_by_block = _by_block(held, [IPv4Network(row.cidr) for row in claimed])
    for row in sorted(claimed, key=lambda row: IPv4Network(row.cidr)):
        cidr, pool = IPv4Network(row.cidr), IPv4Network(row.pool)
        size = capacity(cidr, pool=pool)
        used = per_block[row.cidr]
        quarantined = held_by_block[cidr]
        pool_used[pool] += used
        pool_blocks[pool] += 1
        block_rows.append(
            BlockUsage(
                cidr=cidr,
                pool=pool,
                node=row.node,
                capacity=size,
                used=used,
                quarantined=quarantined,
                free=max(size - used - quarantined, 0),
            )
        )

    pool_held = Counter(
        pool_of(ip, (*pod_pool_list, *service_pool_list, *public_pool_list)) for ip in held
    )
    vip_used = Counter(pool_of(vip, tuple(service_pool_list)) for vip in vips)
    public_used = Counter(pool_of(ip, tuple(public_pool_list)) for ip in public)
    pool_rows = [
        _pool(
            pool,
            kind=PoolKind.POD,
            used=pool_used[pool],
            quarantined=pool_held[pool],
            blocks_total=block_count(pool, block_prefix) if block_prefix >= pool.prefixlen else 0,
            blocks_claimed=pool_blocks[pool],
        )
        for pool in pod_pool_list
    ] + [
        _pool(
            pool,
            kind=kind,
            used=used[pool],
            quarantined=pool_held[pool],
            blocks_total=None,
            blocks_claimed=None,
        )
        for kind, used, pools in (
            (PoolKind.SERVICE, vip_used, service_pool_list),
            (PoolKind.PUBLIC, public_used, public_pool_list),
        )
        for pool in pools
    ]
    return Pools(at=now, pools=pool_rows, blocks=block_rows)


def _pool(
    pool: IPv4Network,
    *,
    kind: PoolKind,
    used: int,
    quarantined: int,
    blocks_total: int | None,
    blocks_claimed: int | None,
) -> PoolUsage:
    size = capacity(pool, pool=pool)
    return PoolUsage(
        pool=pool,
        kind=kind,
        capacity=size,
        used=used,
        quarantined=quarantined,
        free=max(size - used - quarantined, 0),
        blocks_total=blocks_total,
        blocks_claimed=blocks_claimed,
    )


def _by_block(addresses: list[IPv4Address], claimed: list[IPv4Network]) -> Counter[IPv4Network]:
    """How many of `addresses` fall in each claimed block (blocks never overlap)."""
    known = set(claimed)
    prefixes = sorted({block.prefixlen for block in claimed})
    found: Counter[IPv4Network] = Counter()
    for ip in addresses:
        for prefix in prefixes:
            block = IPv4Network((int(ip) >> (32 - prefix) << (32 - prefix), prefix))
            if block in known:
                found[block] += 1
                break
    return found
