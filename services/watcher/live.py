"""The live source, a skeleton: list then watch each kind on a Kubernetes API server.

It converts objects with the converters the manifest source uses (`objects`). Still to
come, with tests against a real kube-apiserver: the informer loop around `list` and
`watch` (resume from the last resourceVersion, relist on 410 Gone and `diff` the relist
against what was known to publish deletions, backoff), and resolving pods' owner chains
through the controllers' caches; pods carry their immediate owner only until then.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch

from services.watcher.errors import InvalidObjectError
from services.watcher.objects import APPS, CORE, fact_of, parse_object
from services.watcher.source import Change, ObservedObject, deletion_of, observed

log = logging.getLogger("knm.watcher")


@dataclass(frozen=True, slots=True)
class Resource:
    api_version: str
    kind: str
    plural: str


RESOURCES: tuple[Resource, ...] = (
    Resource(CORE, "Namespace", "namespaces"),
    Resource(CORE, "Node", "nodes"),
    Resource(CORE, "Pod", "pods"),
    Resource(CORE, "ReplicationController", "replicationcontrollers"),
    Resource(APPS, "ReplicaSet", "replicasets"),
    Resource(APPS, "Deployment", "deployments"),
    Resource(APPS, "StatefulSet", "statefulsets"),
    Resource(APPS, "DaemonSet", "daemonsets"),
    Resource(CORE, "Service", "services"),
)


@dataclass(frozen=True, slots=True)
class Listing:
    objects: list[ObservedObject]
    # Where a watch picks up from.
    resource_version: str


@dataclass(frozen=True, slots=True)
class WatchEvent:
    resource_version: str
    # None for a bookmark, which only moves the resource version on.
    change: Change | None


class LiveSource:
    def __init__(self, api_client: Any) -> None:
        core = client.CoreV1Api(api_client)
        apps = client.AppsV1Api(api_client)
        self._listers: dict[str, Callable[..., Any]] = {
            "namespaces": core.list_namespace,
            "nodes": core.list_node,
            "pods": core.list_pod_for_all_namespaces,
            "replicationcontrollers": core.list_replication_controller_for_all_namespaces,
            "replicasets": apps.list_replica_set_for_all_namespaces,
            "deployments": apps.list_deployment_for_all_namespaces,
            "statefulsets": apps.list_stateful_set_for_all_namespaces,
            "daemonsets": apps.list_daemon_set_for_all_namespaces,
            "services": core.list_service_for_all_namespaces,
        }

    def list(self, resource: Resource) -> Listing:
        """Every object of the resource, and the resourceVersion to watch from."""
        # Raw JSON: the client's models cost far more to build than knm reads from them.
        response = self._listers[resource.plural](_preload_content=False)
        body = json.loads(response.data)
        objects = [
            found
            for raw in body.get("items") or []
            if (found := observe_item(raw, resource=resource))
        ]
        return Listing(objects, str(body["metadata"]["resourceVersion"]))

    def watch(
        self, resource: Resource, *, resource_version: str, timeout_seconds: int = 300
    ) -> Iterator[WatchEvent]:
        """The resource's changes after `resource_version`, until the server ends the watch.

        Raises kubernetes.client.ApiException (status 410) when that version is too old:
        the caller relists.
        """
        # With a timeout, the client does not retry on its own: the caller decides.
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            self._listers[resource.plural],
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
        )
        # The client also builds a model of each object, which knm does not read (it reads
        # `raw_object`): with deserialize=False its handling of ERROR events (410) breaks.
        for event in stream:
            raw: dict[str, Any] = event["raw_object"]
            version = str(raw.get("metadata", {}).get("resourceVersion", resource_version))
            if event["type"] == "BOOKMARK":
                yield WatchEvent(version, None)
                continue
            found = observe_item(raw, resource=resource)
            if found is None:
                continue
            if event["type"] == "DELETED":
                yield WatchEvent(version, deletion_of(found, source_version=version))
            else:
                yield WatchEvent(version, found)


def observe_item(raw: dict[str, Any], *, resource: Resource) -> ObservedObject | None:
    """An object of `resource` as served by the API; None (logged) when knm refuses it."""
    # The API serves list items without their kind.
    typed = {**raw, "apiVersion": resource.api_version, "kind": resource.kind}
    try:
        parsed = parse_object(typed)
        if parsed is None:
            return None
        for note in parsed.ignored:
            log.warning("%s", note, extra={"resource": resource.plural})
        return observed(fact_of(parsed.object), source_version=parsed.object.meta.resource_version)
    except InvalidObjectError as exc:
        # The API server validated it already; what knm refuses, it skips and says so.
        log.warning("skipped: %s", exc.message, extra={"resource": resource.plural})
        return None


class ListingSource:
    """The cluster as one snapshot per read: every resource listed afresh.

    What `knm watcher` without manifests runs for now; the informer (watch, resume,
    relist on 410 Gone) replaces the relisting in the issue that proves it against a
    real control plane.
    """

    def __init__(self, live: LiveSource) -> None:
        self._live = live

    def snapshot(self) -> list[ObservedObject]:
        return [found for resource in RESOURCES for found in self._live.list(resource).objects]
