"""Write-back: what the allocator decided, written where Kubernetes users and the CNI
plugin look for it. Each pod the allocator gave an interface is annotated with it:

    knm.io/interface: {"ip": "10.0.0.5/32", "mac": "02:...", "gateway": "169.254.1.1"}

and each LoadBalancer service with a public address gets it as its ingress, in its
`status` subresource (`status.loadBalancer.ingress: [{ip: 10.1.0.1}]`), cleared when the
address is released while the service lives on (it stopped being a LoadBalancer).

Level-triggered and idempotent: a patch names the object's uid (an object made again
under the same name is not touched), sets the whole value (repeating it changes
nothing), and only the newest intent per object in a batch is written. Positions on the
intents topic are committed only after the patches of the batch went through.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

from knm.core.bus.protocol import Consumer, TopicPartition
from knm.core.events.codec import UndecodableError, decode
from knm.core.events.intents import (
    InterfaceDeclared,
    PublicAddressDeclared,
    PublicAddressWithdrawn,
)
from services.watcher.objects import INTERFACE_ANNOTATION

log = logging.getLogger("knm.watcher")

# The watcher leaves it out of pod facts (objects.WRITTEN_BACK).
ANNOTATION = INTERFACE_ANNOTATION


class PodAnnotator(Protocol):
    def annotate(self, *, namespace: str, name: str, uid: str, key: str, value: str) -> bool:
        """Set the pod's annotation; False when that pod (that uid) no longer exists."""


class ServiceIngress(Protocol):
    def set_ingress(self, *, namespace: str, name: str, uid: str, ip: str | None) -> bool:
        """Make the service's status.loadBalancer.ingress `[{ip}]`, or clear it (None);
        False when that service (that uid) no longer exists."""


def interface_annotation(intent: InterfaceDeclared) -> str:
    prefix = 32
    return json.dumps(
        {"ip": f"{intent.ip}/{prefix}", "mac": intent.mac, "gateway": intent.gateway},
        separators=(",", ":"),
        sort_keys=True,
    )


class WriteBack:
    def __init__(
        self,
        *,
        consumer: Consumer,
        annotator: PodAnnotator,
        ingress: ServiceIngress | None = None,
        batch: int = 500,
    ) -> None:
        self._consumer = consumer
        self._annotator = annotator
        self._ingress = ingress
        self._batch = batch
        self.annotated = 0
        self.ingresses = 0

    def step(self, *, timeout: float) -> int:
        """Write back one batch of intents; how many patches were sent."""
        records = self._consumer.poll(max_records=self._batch, timeout=timeout)
        if not records:
            return 0
        # The newest intent per object: an older one in the same batch is already out of date.
        latest: dict[str, InterfaceDeclared] = {}
        public: dict[str, PublicAddressDeclared | PublicAddressWithdrawn] = {}
        positions: dict[TopicPartition, int] = {}
        for record in records:
            positions[record.position] = record.offset + 1
            try:
                message = decode(record.value)
            except UndecodableError:
                continue
            match message.payload:
                case InterfaceDeclared() as interface:
                    latest[interface.pod_uid] = interface
                case PublicAddressDeclared() | PublicAddressWithdrawn() as address:
                    public[address.uid] = address
        if self._ingress is not None:
            for address in public.values():
                done = self._ingress.set_ingress(
                    namespace=address.namespace,
                    name=address.name,
                    uid=address.uid,
                    ip=address.ip if isinstance(address, PublicAddressDeclared) else None,
                )
                if done:
                    self.ingresses += 1
        for intent in latest.values():
            done = self._annotator.annotate(
                namespace=intent.namespace,
                name=intent.name,
                uid=intent.pod_uid,
                key=ANNOTATION,
                value=interface_annotation(intent),
            )
            if done:
                self.annotated += 1
        self._consumer.commit(positions)
        return len(latest) + (len(public) if self._ingress is not None else 0)


class KubernetesPodAnnotator:
    """Patches pods through the API (needs `patch` on pods)."""

    def __init__(self, api_client: object) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._errors = client.ApiException

    def annotate(self, *, namespace: str, name: str, uid: str, key: str, value: str) -> bool:
        # metadata.uid in the patch is a precondition: a different pod of that name is
        # refused (409), a vanished one is not found (404); neither needs the annotation.
        body = {"metadata": {"uid": uid, "annotations": {key: value}}}
        try:
            self._core.patch_namespaced_pod(name, namespace, body, _preload_content=False)
        except self._errors as error:
            if error.status in (404, 409, 422):
                return False
            raise
        return True


class KubernetesServiceIngress:
    """Patches services' status subresource through the API (needs `patch` on
    services/status)."""

    def __init__(self, api_client: object) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._errors = client.ApiException

    def set_ingress(self, *, namespace: str, name: str, uid: str, ip: str | None) -> bool:
        # The uid is a precondition, as for pods; null removes the list (a merge patch).
        ingress = [{"ip": ip}] if ip is not None else None
        body = {"metadata": {"uid": uid}, "status": {"loadBalancer": {"ingress": ingress}}}
        try:
            self._core.patch_namespaced_service_status(
                name, namespace, body, _preload_content=False
            )
        except self._errors as error:
            if error.status in (404, 409, 422):
                return False
            raise
        return True
