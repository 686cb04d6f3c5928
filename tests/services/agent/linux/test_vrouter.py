"""The vrouter programmed into a real network namespace: nftables and the VXLAN overlay."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import nftables
import pytest
from pyroute2 import IPRoute, netns

from knm.core.events.vrouter import OverlayConfigured, OverlayNode, VrouterConfigured
from services.agent.linux.namespaces import NamespaceThread
from services.agent.linux.ruleset import VXLAN_IFNAME, spread_chain
from services.agent.linux.vrouter import RTPROT_KNM, NftablesError, Vrouter, vtep_mac
from services.agent.program import NodeProgram
from tests.services.agent.linux.test_ruleset import program, vip

RTPROT_STATIC = 4


class Driven:
    """A vrouter fed as the agent feeds it: whole programs folded into pieces, and only
    the changed pieces named after the first call."""

    def __init__(self, vrouter: Vrouter) -> None:
        self.vrouter = vrouter
        self.program = NodeProgram(vrouter.node)
        self.started = False

    def program_to(self, config: VrouterConfigured, overlay: OverlayConfigured) -> None:
        changed = self.program.take(config)
        self.vrouter.program(self.program, changed if self.started else None, overlay)
        self.started = True


@pytest.fixture
def node() -> Iterator[str]:
    """A node namespace with an underlay address, a foreign nftables table and a foreign
    route: knm must leave both alone."""
    name = f"knmt-vr-{secrets.token_hex(3)}"
    netns.create(name)
    thread = NamespaceThread(name, name="setup")

    def setup() -> None:
        with IPRoute() as ipr:
            ipr.link("add", ifname="underlay", kind="veth", peer={"ifname": "underlay-peer"})
            (index,) = ipr.link_lookup(ifname="underlay")
            ipr.addr("add", index=index, address="192.168.0.1", prefixlen=16)
            for ifname in ("underlay", "underlay-peer"):
                ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")
            ipr.route("add", dst="172.16.0.0/24", gateway="192.168.0.254", proto=RTPROT_STATIC)
        nft = nftables.Nftables()
        rc, _, error = nft.cmd("add table ip other; add chain ip other keep")
        assert rc == 0, error

    thread.run(setup)
    thread.close()
    try:
        yield name
    finally:
        netns.remove(name)


def inside(name: str, work: Any) -> Any:
    thread = NamespaceThread(name, name="probe")
    try:
        return thread.run(work)
    finally:
        thread.close()


def ruleset(name: str) -> dict[str, Any]:
    def listed() -> dict[str, Any]:
        nft = nftables.Nftables()
        nft.set_json_output(True)
        rc, output, error = nft.cmd("list ruleset")
        assert rc == 0, error
        result: dict[str, Any] = json.loads(output)
        return result

    result: dict[str, Any] = inside(name, listed)
    return result


def elements(name: str, set_name: str) -> list[Any]:
    for entry in ruleset(name)["nftables"]:
        body = entry.get("set") or entry.get("map")
        if body and body["table"] == "knm" and body["name"] == set_name:
            return list(body.get("elem", []))
    raise AssertionError(f"no set {set_name}")


def without_handles(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_handles(v) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        return [without_handles(v) for v in value]
    return value


def overlay_state(name: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    def read() -> tuple[dict[str, str], dict[str, str], list[str]]:
        with IPRoute() as ipr:
            foreign = [
                f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
                for r in ipr.get_routes(family=2, proto=RTPROT_STATIC)
            ]
            found = ipr.link_lookup(ifname=VXLAN_IFNAME)
            if not found:
                return {}, {}, foreign
            routes = {
                f"{r.get_attr('RTA_DST')}/{r['dst_len']}": r.get_attr("RTA_GATEWAY")
                for r in ipr.get_routes(family=2, oif=found[0], proto=RTPROT_KNM)
            }
            neighbours = {
                n.get_attr("NDA_DST"): n.get_attr("NDA_LLADDR")
                for n in ipr.get_neighbours(family=2, ifindex=found[0])
            }
            return routes, neighbours, foreign

    result: tuple[dict[str, str], dict[str, str], list[str]] = inside(name, read)
    return result


def overlay(*nodes: tuple[str, str | None, tuple[str, ...]], revision: str) -> OverlayConfigured:
    return OverlayConfigured(
        revision=revision,
        nodes=tuple(OverlayNode(name=n, address=a, blocks=b) for n, a, b in nodes),
    )


THREE = overlay(
    ("node-1", "192.168.0.1", ("10.0.0.0/26",)),
    ("node-2", "192.168.0.2", ("10.0.0.64/26", "10.0.1.0/26")),
    ("node-3", "192.168.0.3", ("10.0.0.128/26",)),
    revision="3",
)
TWO = overlay(
    ("node-1", "192.168.0.1", ("10.0.0.0/26",)),
    ("node-2", "192.168.0.2", ("10.0.0.64/26",)),
    revision="2",
)


def first_program() -> VrouterConfigured:
    return program(
        pods={1: "shop/web", 2: "shop/db"},
        vips=(vip("10.254.0.1", 2, 1), vip("10.254.0.2", 2)),
        allows=1,
    )


def test_programs_tables_and_overlay_and_leaves_the_rest(node: str) -> None:
    vrouter = Driven(Vrouter(node="node-1", netns=node))
    try:
        vrouter.program_to(first_program(), THREE)

        assert sorted(e["concat"][1] for e in elements(node, "members")) == ["10.0.0.1", "10.0.0.2"]
        # The web network may reach the first VIP; nothing here may reach the second,
        # which costs the table nothing.
        assert [e[0]["concat"][1:] for e in elements(node, "vips")] == [["10.254.0.1", "tcp", 80]]
        assert sorted((e[0]["concat"][0], e[1]) for e in elements(node, "backend_addr")) == [
            ("10.254.0.1", "10.0.0.1"),
            ("10.254.0.1", "10.0.0.2"),
        ]
        routes, neighbours, foreign = overlay_state(node)
        assert routes == {
            "10.0.0.64/26": "192.168.0.2",
            "10.0.1.0/26": "192.168.0.2",
            "10.0.0.128/26": "192.168.0.3",
        }
        assert neighbours == {a: vtep_mac(a) for a in ("192.168.0.2", "192.168.0.3")}

        # One VIP loses a backend, another goes, a pod goes, a node leaves.
        second = program(pods={1: "shop/web"}, vips=(vip("10.254.0.1", 1),), allows=1)
        vrouter.program_to(second, TWO)

        assert [e["concat"][1] for e in elements(node, "members")] == ["10.0.0.1"]
        assert len(elements(node, "vips")) == 1
        assert [e[1] for e in elements(node, "backend_addr")] == ["10.0.0.1"]
        assert [e[1] for e in elements(node, "vips")] == [
            {"goto": {"target": spread_chain(1, port=8080)}}
        ]
        assert elements(node, "backend_port") == []
        assert vrouter.vrouter.last.commands < 10
        routes, neighbours, foreign = overlay_state(node)
        assert routes == {"10.0.0.64/26": "192.168.0.2"}
        assert neighbours == {"192.168.0.2": vtep_mac("192.168.0.2")}
        assert foreign == ["172.16.0.0/24"]
        tables = {e["table"]["name"] for e in ruleset(node)["nftables"] if "table" in e}
        assert tables == {"knm", "other"}
    finally:
        vrouter.vrouter.close()


def test_a_restarted_vrouter_converges_to_the_same_kernel_state(node: str) -> None:
    first = Driven(Vrouter(node="node-1", netns=node))
    first.program_to(first_program(), THREE)
    first.vrouter.close()
    before = (without_handles(ruleset(node)), overlay_state(node))

    again = Driven(Vrouter(node="node-1", netns=node))
    try:
        again.program_to(first_program(), THREE)
        assert (without_handles(ruleset(node)), overlay_state(node)) == before

        again.program_to(first_program(), TWO)
        assert overlay_state(node)[0] == {"10.0.0.64/26": "192.168.0.2"}
    finally:
        again.vrouter.close()


def test_a_node_without_an_underlay_address_has_no_overlay_device(node: str) -> None:
    vrouter = Driven(Vrouter(node="node-1", netns=node))
    try:
        vrouter.program_to(first_program(), THREE)
        unaddressed = overlay(("node-1", None, ()), ("node-2", "192.168.0.2", ()), revision="x")
        vrouter.program_to(first_program(), unaddressed)
        assert overlay_state(node) == ({}, {}, ["172.16.0.0/24"])
    finally:
        vrouter.vrouter.close()


def hooked_chains(name: str) -> list[str]:
    return sorted(
        e["chain"]["name"]
        for e in ruleset(name)["nftables"]
        if "chain" in e and e["chain"]["table"] == "knm" and "hook" in e["chain"]
    )


def test_a_table_built_in_stages_is_hooked_only_once_whole(
    node: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node's first table is built in stages; a stage the kernel refuses leaves a table
    nothing is hooked to, which the next program replaces at once."""
    taken: list[bytes] = []
    original = nftables.Nftables.cmd

    def refusing_the_second_stage(self: nftables.Nftables, cmdline: Any) -> Any:
        if isinstance(cmdline, bytes):
            taken.append(cmdline)
            if len(taken) == 2:
                return 1, b"", b"Error: refused for the test"
        return original(self, cmdline)

    monkeypatch.setattr(nftables.Nftables, "cmd", refusing_the_second_stage)
    vrouter = Driven(Vrouter(node="node-1", netns=node))
    try:
        with pytest.raises(NftablesError, match="refused for the test"):
            vrouter.program_to(first_program(), THREE)
        # Declared, not filled, not hooked: no packet meets it.
        assert len(taken) == 2
        assert elements(node, "members") == []
        assert hooked_chains(node) == []

        vrouter.program_to(first_program(), THREE)
        assert len(taken) == 3  # the table replaced in one transaction
        assert hooked_chains(node) == ["classify", "dnat", "forward", "hairpin", "unrouted"]
        assert len(elements(node, "members")) == 2
    finally:
        vrouter.vrouter.close()
    monkeypatch.undo()

    # Built afresh in stages on a node without the table: the same table.
    replaced = without_handles(ruleset(node))
    inside(node, lambda: nftables.Nftables().cmd("delete table ip knm"))
    fresh = Driven(Vrouter(node="node-1", netns=node))
    try:
        fresh.program_to(first_program(), THREE)
        assert without_handles(ruleset(node)) == replaced
    finally:
        fresh.vrouter.close()
