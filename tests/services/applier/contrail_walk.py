"""What the VNC test server should hold for a plan, worked out from the allocator's plan
document alone, and a walk of the server's store to compare it with. Neither uses the
applier's mapping code: a mistake there cannot hide itself."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from knm.testing.vnc_store import StoredObject

DD = "default-domain"
# The objects a VNC server has before anyone writes (the test server's seeds).
SEEDED = {
    ("domain", (DD,)),
    ("project", (DD, "default-project")),
    ("network-ipam", (DD, "default-project", "default-network-ipam")),
}
IPAM = (DD, "default-project", "default-network-ipam")

Name = tuple[str, tuple[str, ...]]
Ref = tuple[str, tuple[str, ...], str, tuple[str, ...]]


def _net(network: str) -> tuple[str, ...]:
    namespace, _, name = network.partition("/")
    return (DD, namespace, name)


def expected(document: dict[str, Any]) -> tuple[set[Name], set[Ref], dict[Name, dict[str, Any]]]:
    """(objects, references, key properties) the plan asks for."""
    objects: set[Name] = set()
    refs: set[Ref] = set()
    props: dict[Name, dict[str, Any]] = {}
    namespaces = {n["namespace"] for n in document["networks"]}
    namespaces |= {p["namespace"] for p in document["pods"]}
    namespaces |= {s["namespace"] for s in document["services"]}
    for namespace in namespaces:
        objects.add(("project", (DD, namespace)))
    for network in document["networks"]:
        vn = _net(network["name"])
        objects.add(("virtual-network", vn))
        refs.add(("virtual-network", vn, "network_ipam_refs", IPAM))
    for policy in document["policies"]:
        source, target = _net(policy["from_network"]), _net(policy["to_network"])
        fq = (DD, source[1], f"{source[2]}-uses-{target[1]}-{target[2]}")
        objects.add(("network-policy", fq))
        refs.add(("virtual-network", source, "network_policy_refs", fq))
        refs.add(("virtual-network", target, "network_policy_refs", fq))
        props[("network-policy", fq)] = {
            "rules": sorted(
                (source_str(source), source_str(target), p["protocol"].lower(), p["port"])
                for p in policy["ports"]
            )
            or [(source_str(source), source_str(target), "any", -1)]
        }
    uid_of = {f"{p['namespace']}/{p['name']}": p["uid"] for p in document["pods"]}
    ns_of = {p["uid"]: p["namespace"] for p in document["pods"]}
    for pod in document["pods"]:
        uid, namespace = pod["uid"], pod["namespace"]
        vm, vmi, iip = (uid,), (DD, namespace, uid), (uid,)
        objects |= {("virtual-machine", vm), ("virtual-machine-interface", vmi)}
        objects.add(("instance-ip", iip))
        refs.add(("virtual-machine-interface", vmi, "virtual_machine_refs", vm))
        refs.add(("virtual-machine-interface", vmi, "virtual_network_refs", _net(pod["network"])))
        refs.add(("instance-ip", iip, "virtual_network_refs", _net(pod["network"])))
        refs.add(("instance-ip", iip, "virtual_machine_interface_refs", vmi))
        props[("instance-ip", iip)] = {"address": pod["ip"], "mode": "active-active"}
    for service in document["services"]:
        if service["vip"] is None:
            continue
        network = _net(service["network"])
        pool = (*network, "vips")
        fip = (*pool, service["vip"])
        objects |= {("floating-ip-pool", pool), ("floating-ip", fip)}
        refs.add(("floating-ip", fip, "project_refs", (DD, service["namespace"])))
        for backend in service["backends"]:
            uid = uid_of[backend]
            refs.add(("floating-ip", fip, "virtual_machine_interface_refs", (DD, ns_of[uid], uid)))
        props[("floating-ip", fip)] = {"address": service["vip"]}
    return objects, refs, props


def source_str(fq: tuple[str, ...]) -> str:
    return ":".join(fq)


def walk(
    snapshot: Iterable[StoredObject], *, cluster: str | None = None
) -> tuple[set[Name], set[Ref], dict[Name, dict[str, Any]]]:
    """(objects, references, key properties) the store holds, the seeds left out; with
    `cluster`, only objects whose annotations are that knm's."""
    objects: set[Name] = set()
    refs: set[Ref] = set()
    props: dict[Name, dict[str, Any]] = {}
    for obj in snapshot:
        name = (obj.type, obj.fq_name)
        if name in SEEDED:
            continue
        if cluster is not None and annotations_of(obj) != {
            **annotations_of(obj),
            "owner": "knm",
            "cluster": cluster,
        }:
            continue
        objects.add(name)
        for field, targets in obj.refs.items():
            for target in targets:
                refs.add((obj.type, obj.fq_name, field, tuple(target["to"])))
        if obj.type == "instance-ip":
            props[name] = {
                "address": obj.props.get("instance_ip_address"),
                "mode": obj.props.get("instance_ip_mode"),
            }
        elif obj.type == "floating-ip":
            props[name] = {"address": obj.props.get("floating_ip_address")}
        elif obj.type == "network-policy":
            rules = obj.props.get("network_policy_entries", {}).get("policy_rule", [])
            props[name] = {
                "rules": sorted(
                    (
                        rule["src_addresses"][0]["virtual_network"],
                        rule["dst_addresses"][0]["virtual_network"],
                        rule["protocol"],
                        rule["dst_ports"][0]["start_port"],
                    )
                    for rule in rules
                    if rule.get("action_list", {}).get("simple_action") == "pass"
                    and rule.get("direction") == "<>"
                )
            }
    return objects, refs, props


def annotations_of(obj: StoredObject) -> dict[str, str]:
    pairs = obj.props.get("annotations", {}).get("key_value_pair", [])
    return {p["key"]: p["value"] for p in pairs}
