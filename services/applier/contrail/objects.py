"""The desired model as Contrail objects, built with the official client library's types.

The mapping follows the original manager: a project per namespace; a virtual network per
collection and per service (`default-domain:<ns>:<name>`) referring to the default IPAM
with its pool; per pod a virtual machine (uuid = the pod's UID), an interface (its MAC)
and an instance IP (its address, `active-active`); per service with a VIP a floating-IP
pool child of its network and one floating IP (the VIP) referring to every backend's
interface; per `uses` relation a network policy (the collection's network to the
service's network, the service's ports, pass) attached to both networks. Every object
carries knm's annotations, which is how the reconciler recognises its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from vnc_api import vnc_api as vnc

from knm.core import contrail as names
from knm.core.events.intents import InterfaceDeclared, PolicyDeclared, ServiceDeclared
from services.applier.model import DesiredModel, service_network

OWNER = "knm"
# Creation order: every object after its parent and after what it refers to.
TYPE_ORDER = (
    "project",
    "network-policy",
    "virtual-network",
    "floating-ip-pool",
    "virtual-machine",
    "virtual-machine-interface",
    "instance-ip",
    "floating-ip",
)
# The properties knm sets per type (the rest is the server's or someone else's).
MANAGED_PROPS: dict[str, tuple[str, ...]] = {
    "project": ("annotations",),
    "network-policy": ("annotations", "network_policy_entries"),
    "virtual-network": ("annotations",),
    "floating-ip-pool": ("annotations",),
    "virtual-machine": ("annotations", "display_name"),
    "virtual-machine-interface": (
        "annotations",
        "display_name",
        "virtual_machine_interface_mac_addresses",
    ),
    "instance-ip": ("annotations", "instance_ip_address", "instance_ip_mode"),
    "floating-ip": ("annotations", "floating_ip_address"),
}
MANAGED_REFS: dict[str, tuple[str, ...]] = {
    "project": (),
    "network-policy": (),
    "virtual-network": ("network_ipam_refs", "network_policy_refs"),
    "floating-ip-pool": (),
    "virtual-machine": (),
    "virtual-machine-interface": ("virtual_machine_refs", "virtual_network_refs"),
    "instance-ip": ("virtual_network_refs", "virtual_machine_interface_refs"),
    "floating-ip": ("project_refs", "virtual_machine_interface_refs"),
}
FIP_POOL = "vips"


@dataclass(frozen=True, slots=True)
class Owner:
    """Who knm is in the annotations: `cluster` tells two knm installations apart."""

    cluster: str

    def annotations(self, *, namespace: str, name: str, kind: str) -> Any:
        pairs = [
            ("owner", OWNER),
            ("cluster", self.cluster),
            ("namespace", namespace),
            ("name", name),
            ("kind", kind),
        ]
        return vnc.KeyValuePairs([vnc.KeyValuePair(key=k, value=v) for k, v in pairs])

    def owns(self, annotations: Any) -> bool:
        """Whether an object's annotations (as the library reads them) are knm's."""
        if annotations is None:
            return False
        pairs = {p.key: p.value for p in annotations.get_key_value_pair() or []}
        return pairs.get("owner") == OWNER and pairs.get("cluster") == self.cluster


def _project(namespace: str) -> Any:
    return vnc.Project(namespace, parent_obj=vnc.Domain(names.DOMAIN))


def _network_stub(network: str) -> Any:
    namespace, name = names.split_network(network)
    return vnc.VirtualNetwork(name, parent_obj=_project(namespace))


def _subnets(pools: Sequence[IPv4Network]) -> Any:
    return vnc.VnSubnetsType(
        [
            vnc.IpamSubnetType(subnet=vnc.SubnetType(str(p.network_address), p.prefixlen))
            for p in pools
        ]
    )


def _fq(obj: Any) -> tuple[str, ...]:
    return tuple(obj.get_fq_name())


def policy_fq_name(policy: PolicyDeclared) -> tuple[str, ...]:
    from_ns, from_name = names.split_network(policy.from_network)
    to_ns, to_name = names.split_network(policy.to_network)
    return (names.DOMAIN, from_ns, f"{from_name}-uses-{to_ns}-{to_name}")


class DesiredObjects:
    """Every object the model asks for, by (type, fq_name), each a library object."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._by_type: dict[str, dict[tuple[str, ...], Any]] = {}

    def add(self, obj: Any) -> Any:
        fq = _fq(obj)
        self.objects[(obj.get_type(), fq)] = obj
        self._by_type.setdefault(obj.get_type(), {})[fq] = obj
        return obj

    def get(self, type_name: str, fq_name: tuple[str, ...]) -> Any | None:
        return self.objects.get((type_name, fq_name))

    def of_type(self, type_name: str) -> list[Any]:
        objects = self._by_type.get(type_name, {})
        return [objects[fq] for fq in sorted(objects)]

    def __len__(self) -> int:
        return len(self.objects)


def desired_objects(
    model: DesiredModel,
    *,
    owner: Owner,
    pod_pools: Sequence[IPv4Network],
    service_pools: Sequence[IPv4Network],
) -> DesiredObjects:
    desired = DesiredObjects()
    # Networks: the declared ones, and any an interface or a service names.
    networks: dict[str, str] = {}
    for kind, name in sorted(model.networks):
        networks[name] = kind
    for interface in model.interfaces.values():
        networks.setdefault(interface.network, "pod")
    for service in model.services.values():
        networks.setdefault(service_network(service), "service")
    namespaces = {names.split_network(n)[0] for n in networks}
    namespaces |= {i.namespace for i in model.interfaces.values()}
    namespaces |= {s.namespace for s in model.services.values()}
    for namespace in sorted(namespaces):
        project = _project(namespace)
        project.uuid = names.project_uuid(namespace)
        project.set_annotations(
            owner.annotations(namespace=namespace, name=namespace, kind="namespace")
        )
        desired.add(project)

    policies_of: dict[str, list[Any]] = {}
    for policy in sorted(model.policies.values(), key=lambda p: p.name):
        if policy.from_network not in networks or policy.to_network not in networks:
            continue
        obj = _policy(policy, owner)
        desired.add(obj)
        for network in (policy.from_network, policy.to_network):
            policies_of.setdefault(network, []).append(obj)

    ipam = vnc.NetworkIpam(names.IPAM_FQ_NAME[-1], parent_obj=vnc.Project(names.IPAM_FQ_NAME[1]))
    for network, kind in sorted(networks.items()):
        namespace, name = names.split_network(network)
        vn = vnc.VirtualNetwork(name, parent_obj=_project(namespace))
        vn.uuid = names.network_uuid(network)
        vn.set_annotations(
            owner.annotations(namespace=namespace, name=name, kind=f"{kind}-network")
        )
        vn.add_network_ipam(ipam, _subnets(service_pools if kind == "service" else pod_pools))
        for policy_obj in sorted(policies_of.get(network, []), key=_fq):
            vn.add_network_policy(
                policy_obj, vnc.VirtualNetworkPolicyType(sequence=vnc.SequenceType(0, 0))
            )
        desired.add(vn)

    interfaces: dict[str, Any] = {}
    for interface in sorted(model.interfaces.values(), key=lambda i: i.pod_uid):
        interfaces[interface.pod_uid] = _pod(desired, interface, owner)

    for service in sorted(model.services.values(), key=lambda s: s.uid):
        _service(desired, service, owner, interfaces)
    return desired


def _policy(policy: PolicyDeclared, owner: Owner) -> Any:
    fq = policy_fq_name(policy)
    source = ":".join(names.network_fq_name(policy.from_network))
    target = ":".join(names.network_fq_name(policy.to_network))
    ports = policy.ports or ()
    rules = [
        vnc.PolicyRuleType(
            direction="<>",
            protocol=port.protocol.lower() if port is not None else "any",
            ethertype="IPv4",
            src_addresses=[vnc.AddressType(virtual_network=source)],
            dst_addresses=[vnc.AddressType(virtual_network=target)],
            src_ports=[vnc.PortType(-1, -1)],
            dst_ports=[
                vnc.PortType(port.port, port.port) if port is not None else vnc.PortType(-1, -1)
            ],
            action_list=vnc.ActionListType(simple_action="pass"),
        )
        for port in (ports or (None,))
    ]
    obj = vnc.NetworkPolicy(fq[-1], parent_obj=_project(fq[1]))
    obj.uuid = names.object_uuid("network-policy", fq)
    obj.set_annotations(owner.annotations(namespace=fq[1], name=policy.name, kind="policy"))
    obj.set_network_policy_entries(vnc.PolicyEntriesType(rules))
    return obj


def _pod(desired: DesiredObjects, interface: InterfaceDeclared, owner: Owner) -> Any:
    pod = f"{interface.namespace}/{interface.name}"
    vm = vnc.VirtualMachine(interface.pod_uid)
    vm.uuid = interface.pod_uid
    vm.set_display_name(pod)
    vm.set_annotations(
        owner.annotations(namespace=interface.namespace, name=interface.name, kind="pod")
    )
    desired.add(vm)
    network = _network_stub(interface.network)
    fq = names.interface_fq_name(interface.namespace, interface.pod_uid)
    vmi = vnc.VirtualMachineInterface(fq[-1], parent_obj=_project(interface.namespace))
    vmi.uuid = names.interface_uuid(interface.namespace, interface.pod_uid)
    vmi.set_display_name(pod)
    vmi.set_annotations(
        owner.annotations(namespace=interface.namespace, name=interface.name, kind="pod-interface")
    )
    vmi.set_virtual_machine_interface_mac_addresses(vnc.MacAddressesType([interface.mac]))
    vmi.add_virtual_machine(vm)
    vmi.add_virtual_network(network)
    desired.add(vmi)
    iip = vnc.InstanceIp(interface.pod_uid)
    iip.uuid = names.object_uuid("instance-ip", (interface.pod_uid,))
    iip.set_annotations(
        owner.annotations(namespace=interface.namespace, name=interface.name, kind="pod-address")
    )
    iip.set_instance_ip_address(interface.ip)
    iip.set_instance_ip_mode("active-active")
    iip.add_virtual_network(network)
    iip.add_virtual_machine_interface(vmi)
    desired.add(iip)
    return vmi


def _service(
    desired: DesiredObjects, service: ServiceDeclared, owner: Owner, interfaces: dict[str, Any]
) -> None:
    if service.vip is None:
        return  # headless: no VIP, so no pool and no floating IP
    network = _network_stub(service_network(service))
    pool = vnc.FloatingIpPool(FIP_POOL, parent_obj=network)
    pool.uuid = names.object_uuid("floating-ip-pool", _fq(pool))
    pool.set_annotations(
        owner.annotations(namespace=service.namespace, name=service.name, kind="service-pool")
    )
    desired.add(pool)
    fip = vnc.FloatingIp(service.vip, parent_obj=pool)
    fip.uuid = names.object_uuid("floating-ip", _fq(fip))
    fip.set_annotations(
        owner.annotations(namespace=service.namespace, name=service.name, kind="service-vip")
    )
    fip.set_floating_ip_address(service.vip)
    fip.add_project(_project(service.namespace))
    for backend in sorted(service.backends, key=lambda b: b.pod_uid):
        vmi = interfaces.get(backend.pod_uid)
        if vmi is not None:
            fip.add_virtual_machine_interface(vmi)
    desired.add(fip)
