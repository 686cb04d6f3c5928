from __future__ import annotations

import os

import pytest

from services.agent.linux.links import all_links
from services.agent.linux.namespaces import inside, netns_path, read_sysctl, routing, write_sysctl
from tests.services.agent.namespaces import Namespaces


def own_namespace() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_work_runs_inside_the_namespace_and_the_caller_stays_where_it_was(
    spaces: Namespaces,
) -> None:
    target = spaces.make("ns")
    before = own_namespace()

    seen = inside(target, own_namespace)

    assert seen == os.stat(target).st_ino
    assert seen != before
    assert own_namespace() == before
    assert inside(None, own_namespace) == before


def test_a_failure_inside_reaches_the_caller(spaces: Namespaces) -> None:
    target = spaces.make("ns")

    def fail() -> None:
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        inside(target, fail)
    with pytest.raises(FileNotFoundError):
        inside(f"{target}-missing", own_namespace)


def test_routing_and_sysctls_are_the_namespaces_own(spaces: Namespaces) -> None:
    target = spaces.make("ns")

    with routing(target) as ipr:
        assert [link.name for link in all_links(ipr)] == ["lo"]
    write_sysctl(target, name="net.ipv4.ip_forward", value="1")
    assert read_sysctl(target, name="net.ipv4.ip_forward") == "1"
    fresh = spaces.make("fresh")
    assert read_sysctl(fresh, name="net.ipv4.ip_forward") == "0"


def test_a_name_is_found_where_ip_netns_keeps_it() -> None:
    assert netns_path("knm-lab-node-1") == "/var/run/netns/knm-lab-node-1"
    assert netns_path("/proc/42/ns/net") == "/proc/42/ns/net"
