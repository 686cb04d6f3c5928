from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv4Network

from knm.core.domain.addresses import block_at, block_count, first_free, host_ifname, mac_for
from knm.core.domain.model import QuarantineRecord

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_blocks_tile_the_pool() -> None:
    pool = IPv4Network("10.0.0.0/16")
    assert block_count(pool, 26) == 1024
    assert block_at(pool, 26, 0) == IPv4Network("10.0.0.0/26")
    assert block_at(pool, 26, 1023) == IPv4Network("10.0.255.192/26")


def test_first_free_skips_taken_reserved_and_quarantined_addresses() -> None:
    pool = IPv4Network("10.0.0.0/16")
    block = IPv4Network("10.0.0.0/29")
    held = {
        IPv4Address("10.0.0.2"): QuarantineRecord(
            IPv4Address("10.0.0.2"), str(pool), NOW, NOW + timedelta(seconds=60)
        ),
        IPv4Address("10.0.0.3"): QuarantineRecord(
            IPv4Address("10.0.0.3"), str(pool), NOW - timedelta(seconds=90), NOW
        ),
    }
    taken = {IPv4Address("10.0.0.1")}
    # .0 is the pool's own network address; .1 is taken; .2 is in quarantine; .3's is over.
    assert first_free(block, pool=pool, taken=taken, quarantine=held, now=NOW) == IPv4Address(
        "10.0.0.3"
    )


def test_first_free_returns_none_when_the_block_is_full() -> None:
    pool = IPv4Network("10.0.0.0/30")
    taken = {IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")}
    assert first_free(pool, pool=pool, taken=taken, quarantine={}, now=NOW) is None


def test_mac_and_ifname_are_stable_and_valid() -> None:
    assert mac_for(IPv4Address("10.0.3.7")) == "0a:58:0a:00:03:07"
    name = host_ifname("2b6c7f0e-1d2c-4c1e-9f00-000000000001")
    assert name == host_ifname("2b6c7f0e-1d2c-4c1e-9f00-000000000001")
    assert len(name) <= 15
    assert name.startswith("knm")
