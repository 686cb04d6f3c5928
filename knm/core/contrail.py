"""How knm names its objects in Contrail, shared by the applier (which creates them) and
the agent (which registers ports by their uuids without asking the controller).

Objects knm creates carry uuids derived from their type and fq_name, so every node can
compute the uuid of a pod's interface and network on its own; a virtual machine's uuid is
its pod's UID, as the original manager did.
"""

from __future__ import annotations

import uuid

DOMAIN = "default-domain"
# The IPAM every Contrail installation has; knm's networks draw their subnets from it.
IPAM_FQ_NAME = (DOMAIN, "default-project", "default-network-ipam")
# Fixed: changing it would change every uuid knm derived.
_UUID_NAMESPACE = uuid.UUID("6f1c2a43-5b0e-4a8e-9d51-4b6e6e6b6d00")


def object_uuid(object_type: str, fq_name: tuple[str, ...]) -> str:
    """The uuid knm gives the object of this type and name."""
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{object_type}:{':'.join(fq_name)}"))


def split_network(network: str) -> tuple[str, str]:
    """`<namespace>/<name>` (knm's network names) into its parts."""
    namespace, _, name = network.partition("/")
    return namespace, name


def project_fq_name(namespace: str) -> tuple[str, ...]:
    return (DOMAIN, namespace)


def network_fq_name(network: str) -> tuple[str, ...]:
    """A collection network `ns/coll` is `default-domain:ns:coll`; a service network
    `ns/service-s` is `default-domain:ns:service-s`."""
    namespace, name = split_network(network)
    return (DOMAIN, namespace, name)


def interface_fq_name(namespace: str, pod_uid: str) -> tuple[str, ...]:
    # Named by uid: a pod recreated under the same name is another interface.
    return (DOMAIN, namespace, pod_uid)


def interface_uuid(namespace: str, pod_uid: str) -> str:
    return object_uuid("virtual-machine-interface", interface_fq_name(namespace, pod_uid))


def network_uuid(network: str) -> str:
    return object_uuid("virtual-network", network_fq_name(network))


def project_uuid(namespace: str) -> str:
    return object_uuid("project", project_fq_name(namespace))
