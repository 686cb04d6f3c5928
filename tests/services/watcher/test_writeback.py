"""Write-back of LoadBalancer ingress addresses, against the real control plane: the
status subresource is patched, only for the service of that uid, and cleared again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client

from knm.core.bus.memory import MemoryBus
from knm.core.bus.protocol import OutgoingMessage
from knm.core.events.base import envelope
from knm.core.events.codec import encode
from knm.core.events.intents import PublicAddressDeclared, PublicAddressWithdrawn
from knm.core.topics import Topics
from services.watcher.writeback import (
    KubernetesPodAnnotator,
    KubernetesServiceIngress,
    WriteBack,
)
from tests.services.watcher.cluster import api_client, delete_namespace, fresh_namespace, kubectl

TOPICS = Topics(prefix="t.")

LOAD_BALANCER = """
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  type: LoadBalancer
  selector: {name: shop}
  ports: [{port: 80}]
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    name = fresh_namespace()
    yield name
    delete_namespace(name)


@pytest.fixture
def api() -> Iterator[client.ApiClient]:
    with api_client() as found:
        yield found


def service(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    response: Any = client.CoreV1Api(api).read_namespaced_service(
        "shop", namespace, _preload_content=False
    )
    found: dict[str, Any] = json.loads(response.data)
    return found


def ingress(api: client.ApiClient, namespace: str) -> list[str]:
    status = service(api, namespace).get("status") or {}
    return [entry["ip"] for entry in (status.get("loadBalancer") or {}).get("ingress") or []]


def test_the_ingress_is_set_for_that_uid_only_and_cleared(
    api: client.ApiClient, namespace: str
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=LOAD_BALANCER)
    uid = service(api, namespace)["metadata"]["uid"]
    writer = KubernetesServiceIngress(api)

    assert writer.set_ingress(namespace=namespace, name="shop", uid=uid, ip="10.1.0.7")
    assert ingress(api, namespace) == ["10.1.0.7"]
    # Idempotent: the same patch again leaves the same status.
    assert writer.set_ingress(namespace=namespace, name="shop", uid=uid, ip="10.1.0.7")
    assert ingress(api, namespace) == ["10.1.0.7"]
    # Another service of that name (another uid) is not touched.
    assert not writer.set_ingress(namespace=namespace, name="shop", uid="not-it", ip="10.1.0.8")
    assert ingress(api, namespace) == ["10.1.0.7"]
    assert writer.set_ingress(namespace=namespace, name="shop", uid=uid, ip=None)
    assert ingress(api, namespace) == []
    # A service that is gone needs nothing.
    kubectl("delete", "-n", namespace, "service/shop")
    assert not writer.set_ingress(namespace=namespace, name="shop", uid=uid, ip="10.1.0.7")


def publish(bus: MemoryBus, *events: PublicAddressDeclared | PublicAddressWithdrawn) -> None:
    at = datetime.now(UTC)
    bus.publisher().publish(
        [
            OutgoingMessage(
                TOPICS.intents,
                f"public/{event.uid}",
                encode(envelope(event, key=f"public/{event.uid}", occurred_at=at)),
            )
            for event in events
        ]
    )


def test_the_write_back_writes_the_newest_intent_of_each_service(
    api: client.ApiClient, namespace: str
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=LOAD_BALANCER)
    uid = service(api, namespace)["metadata"]["uid"]
    bus = MemoryBus(partitions=2)
    writeback = WriteBack(
        consumer=bus.consumer(group="writeback", topics=[TOPICS.intents]),
        annotator=KubernetesPodAnnotator(api),
        ingress=KubernetesServiceIngress(api),
    )
    names = {"uid": uid, "namespace": namespace, "name": "shop"}

    publish(bus, PublicAddressDeclared(**names, ip="10.1.0.1"))
    assert writeback.step(timeout=1) == 1
    assert ingress(api, namespace) == ["10.1.0.1"]

    # Released, then another address, in one batch: only the newest is written.
    publish(
        bus,
        PublicAddressWithdrawn(**names, ip="10.1.0.1"),
        PublicAddressDeclared(**names, ip="10.1.0.2"),
    )
    assert writeback.step(timeout=1) == 1
    assert ingress(api, namespace) == ["10.1.0.2"]

    publish(bus, PublicAddressWithdrawn(**names, ip="10.1.0.2"))
    assert writeback.step(timeout=1) == 1
    assert ingress(api, namespace) == []
    assert writeback.ingresses == 3
