"""PodWiring on real namespaces: a node namespace, and sandboxes as the runtime makes them."""

from __future__ import annotations

import socket
import time
from dataclasses import replace

import pytest

from knm.core.domain.addresses import host_ifname
from services.agent.dataplane import PodInterface, Sandbox, SandboxInUseError
from services.agent.linux.links import (
    RT_SCOPE_LINK,
    Link,
    all_links,
    find_link,
    ipv4_addresses,
    main_routes,
)
from services.agent.linux.namespaces import inside, read_sysctl, routing
from services.agent.linux.wiring import RTPROT_KNM, PodWiring, pod_of
from tests.services.agent.namespaces import Namespaces

GATEWAY = "169.254.1.1"


def pod(uid: str, ip: str) -> PodInterface:
    octets = [int(part) for part in ip.split(".")]
    return PodInterface(
        pod_uid=uid,
        namespace="shop",
        name=f"web-{uid}",
        network="shop/web",
        ip=ip,
        mac="0a:58:" + ":".join(f"{o:02x}" for o in octets),
        gateway=GATEWAY,
        ifname=host_ifname(uid),
    )


def sandbox(path: str, container: str = "c1") -> Sandbox:
    return Sandbox(container_id=container, netns=path, ifname="eth0")


def link(path: str | None, name: str) -> Link | None:
    with routing(path) as ipr:
        return find_link(ipr, name)


def host_link(node: str, iface: PodInterface) -> Link:
    found = link(node, iface.ifname)
    assert found is not None, f"{iface.ifname} is missing"
    return found


def connect(*, server_ns: str, client_ns: str, address: str) -> tuple[socket.socket, ...]:
    """A TCP connection from `client_ns` to a listener on `address` in `server_ns`:
    (listener, client end, server end)."""
    listener = inside(server_ns, lambda: socket.create_server((address, 0)))
    port = listener.getsockname()[1]
    client = inside(client_ns, lambda: socket.create_connection((address, port), timeout=5))
    listener.settimeout(5)
    accepted, _ = listener.accept()
    return listener, client, accepted


def close(*sockets: socket.socket) -> None:
    for each in sockets:
        each.close()


@pytest.fixture
def node(spaces: Namespaces) -> str:
    return spaces.make("node")


def test_attach_wires_the_pod_end_and_the_host_end(spaces: Namespaces, node: str) -> None:
    box = spaces.make("pod")
    iface = pod("a1", "10.0.0.5")
    wiring = PodWiring(node_netns=spaces.name(node))

    wiring.attach(iface, sandbox(box))

    host = host_link(node, iface)
    assert (host.kind, host.up) == ("veth", True)
    assert pod_of(host) == "a1"
    with routing(node) as ipr:
        assert ipv4_addresses(ipr, host.index) == {(GATEWAY, 32)}
        (route,) = [r for r in main_routes(ipr) if r.dst == "10.0.0.5"]
    assert (route.dst_len, route.oif, route.scope, route.proto) == (
        32,
        host.index,
        RT_SCOPE_LINK,
        RTPROT_KNM,
    )
    eth = link(box, "eth0")
    assert eth is not None
    assert (eth.kind, eth.up, eth.mac) == ("veth", True, iface.mac)
    assert host.peer == eth.index
    loopback = link(box, "lo")
    assert loopback is not None
    assert loopback.up
    with routing(box) as ipr:
        assert ipv4_addresses(ipr, eth.index) == {("10.0.0.5", 32)}
        routes = {(r.dst, r.dst_len, r.gateway, r.scope) for r in main_routes(ipr)}
    assert routes == {(GATEWAY, 32, None, RT_SCOPE_LINK), ("0.0.0.0", 0, GATEWAY, 0)}
    assert read_sysctl(node, name="net.ipv4.ip_forward") == "1"
    assert wiring.check(iface, sandbox(box)) == []
    assert wiring.interfaces() == {"a1": iface}


def test_the_pod_reaches_its_gateway_over_tcp(spaces: Namespaces, node: str) -> None:
    box = spaces.make("pod")
    iface = pod("a1", "10.0.0.5")
    PodWiring(node_netns=node).attach(iface, sandbox(box))

    listener, client, accepted = connect(server_ns=node, client_ns=box, address=GATEWAY)
    try:
        client.sendall(b"ping")
        assert accepted.recv(4) == b"ping"
        assert accepted.getpeername()[0] == "10.0.0.5"
    finally:
        close(listener, client, accepted)


def test_two_pods_on_one_node_reach_each_other(spaces: Namespaces, node: str) -> None:
    first, second = spaces.make("pod1"), spaces.make("pod2")
    wiring = PodWiring(node_netns=node)
    wiring.attach(pod("a1", "10.0.0.5"), sandbox(first))
    wiring.attach(pod("a2", "10.0.0.6"), sandbox(second, "c2"))

    listener, client, accepted = connect(server_ns=second, client_ns=first, address="10.0.0.6")
    try:
        assert accepted.getpeername()[0] == "10.0.0.5"
    finally:
        close(listener, client, accepted)


def test_attaching_again_changes_nothing(spaces: Namespaces, node: str) -> None:
    box = spaces.make("pod")
    iface = pod("a1", "10.0.0.5")
    wiring = PodWiring(node_netns=node)
    wiring.attach(iface, sandbox(box))
    before = (host_link(node, iface), link(box, "eth0"))
    listener, client, accepted = connect(server_ns=node, client_ns=box, address=GATEWAY)

    try:
        wiring.attach(iface, sandbox(box))
        wiring.attach(iface, None)

        assert (host_link(node, iface), link(box, "eth0")) == before
        client.sendall(b"still here")
        assert accepted.recv(10) == b"still here"
    finally:
        close(listener, client, accepted)


def test_a_new_address_or_mac_rewires(spaces: Namespaces, node: str) -> None:
    box = spaces.make("pod")
    iface = pod("a1", "10.0.0.5")
    wiring = PodWiring(node_netns=node)
    wiring.attach(iface, sandbox(box))

    moved = replace(iface, ip="10.0.0.9", mac="0a:58:0a:00:00:99")
    wiring.attach(moved, sandbox(box))

    eth = link(box, "eth0")
    assert eth is not None
    assert eth.mac == moved.mac
    with routing(box) as ipr:
        assert ipv4_addresses(ipr, eth.index) == {("10.0.0.9", 32)}
    with routing(node) as ipr:
        assert {r.dst for r in main_routes(ipr) if r.proto == RTPROT_KNM} == {"10.0.0.9"}
    assert wiring.check(moved, sandbox(box)) == []
    assert wiring.check(iface, sandbox(box)) != []


def test_a_new_sandbox_rewires_and_the_old_one_is_left_empty(spaces: Namespaces, node: str) -> None:
    old, new = spaces.make("old"), spaces.make("new")
    iface = pod("a1", "10.0.0.5")
    wiring = PodWiring(node_netns=node)
    wiring.attach(iface, sandbox(old, "c1"))

    wiring.attach(iface, sandbox(new, "c2"))

    assert link(old, "eth0") is None
    assert link(new, "eth0") is not None
    assert wiring.check(iface, sandbox(new, "c2")) == []
    with routing(node) as ipr:
        assert [x.name for x in all_links(ipr) if pod_of(x) is not None] == [iface.ifname]


def test_a_restarted_wiring_adopts_what_it_finds_without_touching_it(
    spaces: Namespaces, node: str
) -> None:
    box = spaces.make("pod")
    iface = pod("a1", "10.0.0.5")
    PodWiring(node_netns=node).attach(iface, sandbox(box))
    before = (host_link(node, iface), link(box, "eth0"))
    listener, client, accepted = connect(server_ns=node, client_ns=box, address=GATEWAY)

    try:
        restarted = PodWiring(node_netns=node)
        restarted.attach(iface, None)

        assert (host_link(node, iface), link(box, "eth0")) == before
        assert restarted.interfaces() == {"a1": iface}
        assert restarted.waiting() == {}
        client.sendall(b"established")
        assert accepted.recv(11) == b"established"
    finally:
        close(listener, client, accepted)


def test_without_a_sandbox_a_pod_not_wired_waits_for_one(spaces: Namespaces, node: str) -> None:
    iface = pod("a1", "10.0.0.5")
    wiring = PodWiring(node_netns=node)

    wiring.attach(iface, None)

    assert wiring.waiting() == {"a1": iface}
    assert wiring.interfaces() == {}
    assert link(node, iface.ifname) is None

    box = spaces.make("pod")
    wiring.attach(iface, sandbox(box))
    assert wiring.waiting() == {}
    assert wiring.check(iface, sandbox(box)) == []


def test_a_wiring_found_for_another_address_is_kept_but_not_adopted(
    spaces: Namespaces, node: str
) -> None:
    box = spaces.make("pod")
    iface = pod("a1", "10.0.0.5")
    PodWiring(node_netns=node).attach(iface, sandbox(box))
    before = host_link(node, iface)

    restarted = PodWiring(node_netns=node)
    restarted.attach(replace(iface, ip="10.0.0.9"), None)

    assert host_link(node, iface) == before
    assert list(restarted.waiting()) == ["a1"]


def test_detach_removes_both_ends_and_an_unknown_pod_is_no_error(
    spaces: Namespaces, node: str
) -> None:
    box = spaces.make("pod")
    iface = pod("a1", "10.0.0.5")
    wiring = PodWiring(node_netns=node)
    wiring.attach(iface, sandbox(box))

    wiring.detach("a1")
    wiring.detach("a1")
    wiring.detach("nobody")

    assert link(node, iface.ifname) is None
    assert link(box, "eth0") is None
    with routing(node) as ipr:
        assert [r for r in main_routes(ipr) if r.proto == RTPROT_KNM] == []
    assert wiring.interfaces() == {}


def test_a_restarted_wiring_detaches_what_an_earlier_one_wired(
    spaces: Namespaces, node: str
) -> None:
    box = spaces.make("pod")
    iface = pod("a1", "10.0.0.5")
    PodWiring(node_netns=node).attach(iface, sandbox(box))

    PodWiring(node_netns=node).detach("a1")

    assert link(node, iface.ifname) is None
    assert link(box, "eth0") is None


def test_remove_unwanted_removes_only_knm_links(spaces: Namespaces, node: str) -> None:
    boxes = [spaces.make(f"pod{n}") for n in range(2)]
    kept, gone = pod("a0", "10.0.0.5"), pod("a1", "10.0.0.6")
    wiring = PodWiring(node_netns=node)
    wiring.attach(kept, sandbox(boxes[0]))
    wiring.attach(gone, sandbox(boxes[1], "c2"))
    with routing(node) as ipr:
        # Not knm's: a plain veth pair, and one named like knm's but without its mark.
        ipr.link("add", ifname="other0", kind="veth", peer={"ifname": "other1"})
        ipr.link("add", ifname=host_ifname("alien"), kind="veth", peer={"ifname": "alien1"})

    assert wiring.owned() == {kept.ifname, gone.ifname}
    removed = PodWiring(node_netns=node).remove_unwanted({kept.ifname})

    assert removed == {gone.ifname}
    assert wiring.owned() == {kept.ifname}
    with routing(node) as ipr:
        names = {x.name for x in all_links(ipr)}
    assert {"other0", "other1", host_ifname("alien"), "alien1", kept.ifname} <= names
    assert gone.ifname not in names
    assert link(boxes[1], "eth0") is None
    assert wiring.check(kept, sandbox(boxes[0])) == []


def test_a_sandbox_whose_interface_name_is_taken_is_refused_untouched(
    spaces: Namespaces, node: str
) -> None:
    box = spaces.make("pod")
    with routing(box) as ipr:
        ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "theirs"})
    before = link(box, "eth0")
    wiring = PodWiring(node_netns=node)

    with pytest.raises(SandboxInUseError, match="already has an interface eth0"):
        wiring.attach(pod("a1", "10.0.0.5"), sandbox(box))

    assert link(box, "eth0") == before
    assert wiring.owned() == set()


def test_check_names_what_drifted_and_attach_repairs_it(spaces: Namespaces, node: str) -> None:
    box = spaces.make("pod")
    iface = pod("a1", "10.0.0.5")
    wiring = PodWiring(node_netns=node)
    wiring.attach(iface, sandbox(box))
    with routing(box) as ipr:
        eth = find_link(ipr, "eth0")
        assert eth is not None
        ipr.route("del", dst="0.0.0.0", dst_len=0, gateway=GATEWAY, oif=eth.index)
    with routing(node) as ipr:
        ipr.link("set", index=host_link(node, iface).index, state="down")

    problems = wiring.check(iface, sandbox(box))

    # A link going down takes the routes through it along.
    assert problems == [
        f"host interface {iface.ifname} is down",
        f"no route to 10.0.0.5/32 through {iface.ifname}",
        f"eth0 in {box} has no default route via {GATEWAY}",
    ]
    wiring.attach(iface, sandbox(box))
    assert wiring.check(iface, sandbox(box)) == []


def test_check_of_a_sandbox_that_is_gone(spaces: Namespaces, node: str) -> None:
    box = spaces.make("pod")
    iface = pod("a1", "10.0.0.5")
    wiring = PodWiring(node_netns=node)
    wiring.attach(iface, sandbox(box))

    spaces.remove(box)

    assert f"sandbox {box} does not exist" in wiring.check(iface, sandbox(box))
    # The namespace takes the pod's end along, and with it the host's (the kernel
    # dismantles a namespace in the background).
    deadline = time.monotonic() + 10
    while link(node, iface.ifname) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert link(node, iface.ifname) is None


def test_an_mtu_is_set_on_both_ends(spaces: Namespaces, node: str) -> None:
    box = spaces.make("pod")
    iface = pod("a1", "10.0.0.5")
    wiring = PodWiring(node_netns=node, mtu=1450)

    wiring.attach(iface, sandbox(box))

    eth = link(box, "eth0")
    assert eth is not None
    assert (host_link(node, iface).mtu, eth.mtu) == (1450, 1450)
    assert PodWiring(node_netns=node).check(iface, sandbox(box)) == []
    assert PodWiring(node_netns=node, mtu=1400).check(iface, sandbox(box)) == [
        f"host interface {iface.ifname} has MTU 1450, not 1400",
        f"eth0 in {box} has MTU 1450, not 1400",
    ]
