"""A running lab: the pipeline's processes, the nodes, the pods, kept converged.

`knm lab up` starts this in the background and waits until it reports ready; it runs
until SIGTERM (`knm lab down`), then removes everything it made.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from knm.core.events.facts import NodeObserved, PodObserved
from knm.core.settings import Settings
from knm.core.store.database import create_engine
from knm.lab import backing
from knm.lab.kubelet import Kubelet
from knm.lab.processes import Supervisor
from knm.lab.record import (
    LabRecord,
    NodeRecord,
    PodRecord,
    PolicyRecord,
    ServiceRecord,
    lab_dir,
    save,
)
from knm.lab.responder import Responders
from knm.lab.topology import Layout, build_underlay, existing, remove_namespaces
from services.allocator.report import plan_document
from services.watcher.source import ManifestSource

log = logging.getLogger("knm.lab")

TICK = 0.2
# Ready once nothing has changed (allocations, programs) for this long.
QUIET = 1.0


def declared_ports(snapshot: Sequence[Any]) -> dict[str, set[int]]:
    """Each manifest pod's declared TCP container ports, and their names, by UID."""
    ports: dict[str, set[int]] = {}
    for obj in snapshot:
        if isinstance(obj.event, PodObserved):
            ports[obj.event.uid] = {p.port for p in obj.event.ports if p.protocol == "TCP"}
    return ports


def named_ports(snapshot: Sequence[Any]) -> dict[str, dict[str, int]]:
    names: dict[str, dict[str, int]] = {}
    for obj in snapshot:
        if isinstance(obj.event, PodObserved):
            names[obj.event.uid] = {p.name: p.port for p in obj.event.ports if p.name}
    return names


def pod_ports(
    document: Mapping[str, Any],
    *,
    declared: Mapping[str, set[int]],
    names: Mapping[str, Mapping[str, int]],
) -> dict[str, set[int]]:
    """Per pod UID: its declared ports, and the target ports of the services selecting
    it (a named target port resolved on that pod)."""
    uids = {f"{p['namespace']}/{p['name']}": p["uid"] for p in document["pods"]}
    ports = {uid: set(declared.get(uid, ())) for uid in uids.values()}
    for service in document["services"]:
        for spec in service["ports"]:
            if spec["protocol"] != "TCP":
                continue
            for backend in service["backends"]:
                uid = uids.get(backend)
                if uid is None:
                    continue
                target = spec.get("target_port")
                if target is None:
                    ports[uid].add(spec["port"])
                elif isinstance(target, int) or str(target).isdigit():
                    ports[uid].add(int(target))
                elif target in names.get(uid, {}):
                    ports[uid].add(names[uid][target])
    return ports


class LabDaemon:
    def __init__(
        self,
        *,
        name: str,
        manifests: Sequence[Path],
        nodes: int,
        server_url: str,
        kafka_bootstrap: str,
        settings: Settings,
    ) -> None:
        self.layout = Layout(name)
        self._manifests = list(manifests)
        self._settings = settings
        self._dir = lab_dir(name)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._source = ManifestSource(self._manifests, nodes=nodes, underlay=settings.node_underlay)
        self._server_url = server_url
        database = backing.database_name(name)
        self.record = LabRecord(
            name=name,
            daemon_pid=os.getpid(),
            database_url=server_url,
            database_name=database,
            kafka_bootstrap=kafka_bootstrap,
            topic_prefix=f"{name}.{secrets.token_hex(3)}.",
        )
        self._responders = Responders()
        self._kubelet: Kubelet | None = None
        self._supervisor: Supervisor | None = None
        self._declared: dict[str, set[int]] = {}
        self._names: dict[str, dict[str, int]] = {}
        self._expected: set[str] = set()
        self._fingerprint = ""
        self._quiet_since = time.monotonic()

    # ---- bring-up ---------------------------------------------------------------------

    def up(self) -> None:
        snapshot = self._source.snapshot()
        self._declared = declared_ports(snapshot)
        # Not ready before every manifest pod is wired: an empty database is quiet too.
        self._expected = {
            o.event.uid
            for o in snapshot
            if isinstance(o.event, PodObserved) and not o.event.host_network
        }
        self._names = named_ports(snapshot)
        addresses = {
            o.event.name: o.event.address
            for o in snapshot
            if isinstance(o.event, NodeObserved) and o.event.address is not None
        }
        record = self.record
        record.namespaces = [
            self.layout.underlay,
            *(self.layout.node(n) for n in sorted(addresses)),
        ]
        save(record)
        build_underlay(self.layout, nodes=addresses, underlay=self._settings.node_underlay)
        lab_url = backing.create_database(self._server_url, name=record.database_name)
        backing.create_topics(bootstrap=record.kafka_bootstrap, prefix=record.topic_prefix)
        self._lab_url = lab_url

        env = {
            **os.environ,
            "KNM_DATABASE_URL": lab_url,
            "KNM_KAFKA_BOOTSTRAP": record.kafka_bootstrap,
            "KNM_TOPIC_PREFIX": record.topic_prefix,
            "KNM_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
        supervisor = Supervisor(env=env, logs=self._dir)
        files = [arg for path in self._manifests for arg in ("-f", str(path))]
        supervisor.add(
            "watcher", "watcher", *files, "--nodes", str(len(addresses)), "--interval", "0.5"
        )
        supervisor.add("allocator", "allocator")
        supervisor.add("applier", "applier")
        sockets: dict[str, Path] = {}
        for node in sorted(addresses):
            sockets[node] = self._dir / f"{node}.sock"
            child = supervisor.add(
                f"agent-{node}",
                "agent",
                "--node",
                node,
                "--dataplane",
                "linux",
                "--netns",
                self.layout.node(node),
                "--cni-socket",
                str(sockets[node]),
            )
            record.nodes.append(
                NodeRecord(
                    name=node,
                    netns=self.layout.node(node),
                    address=addresses[node],
                    cni_socket=str(sockets[node]),
                    agent_health_port=child.health_port,
                )
            )
        supervisor.start_all()
        self._supervisor = supervisor
        self._kubelet = Kubelet(layout=self.layout, sockets=sockets, responders=self._responders)
        self._engine = create_engine(lab_url)
        self._save_processes()

    @property
    def supervisor(self) -> Supervisor:
        assert self._supervisor is not None, "up() first"
        return self._supervisor

    def _save_processes(self) -> None:
        self.record.processes = {
            name: child.pid
            for name, child in self.supervisor.children.items()
            if child.pid is not None
        }
        save(self.record)

    # ---- the loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        serving = threading.Thread(target=self._responders.run, args=(stop,), name="responders")
        serving.start()
        try:
            while not stop.wait(TICK):
                try:
                    self.tick()
                except Exception:  # one bad pass must not take the lab down
                    log.exception("lab pass failed; trying again")
        finally:
            serving.join()

    def tick(self) -> None:
        assert self._kubelet is not None
        self.supervisor.supervise()
        try:
            with self._engine.connect() as connection:
                document = plan_document(connection)
        except Exception as error:  # the database restarting is not the lab's end
            log.warning("cannot read the allocator's state: %s", error)
            return
        ports = pod_ports(document, declared=self._declared, names=self._names)
        wanted = [
            {
                "key": f"{p['namespace']}/{p['name']}",
                "uid": p["uid"],
                "node": p["node"],
                "ip": p["ip"],
                "ports": sorted(ports.get(p["uid"], ())),
            }
            for p in document["pods"]
            if p.get("ip")
        ]
        wired = self._kubelet.reconcile(wanted)
        self._update(document, wired=wired)

    def _update(self, document: Mapping[str, Any], *, wired: bool) -> None:
        assert self._kubelet is not None
        record = self.record
        networks = {f"{p['namespace']}/{p['name']}": p["network"] for p in document["pods"]}
        record.pods = [
            PodRecord(
                key=pod.key,
                uid=pod.uid,
                node=pod.node,
                netns=pod.netns,
                ip=pod.ip,
                network=networks.get(pod.key, ""),
                ports=list(pod.ports),
            )
            for pod in sorted(self._kubelet.pods.values(), key=lambda p: p.key)
        ]
        record.services = [
            ServiceRecord(
                key=f"{s['namespace']}/{s['name']}",
                vip=s["vip"],
                network=s["network"],
                ports=[p["port"] for p in s["ports"] if p["protocol"] == "TCP"],
                backends=list(s["backends"]),
            )
            for s in document["services"]
            if s.get("vip")
        ]
        record.policies = [
            PolicyRecord(
                from_network=p["from_network"],
                to_network=p["to_network"],
                ports=[q["port"] for q in p["ports"] if q["protocol"] == "TCP"],
            )
            for p in document["policies"]
        ]
        record.problems = dict(self._kubelet.failures)
        programs = self._programs()
        fingerprint = hashlib.sha256(
            json.dumps([document, programs], sort_keys=True, default=str).encode()
        ).hexdigest()
        now = time.monotonic()
        if fingerprint != self._fingerprint:
            self._fingerprint, self._quiet_since = fingerprint, now
        agents_ready = programs is not None and all(
            p is not None and p.get("ready") for p in programs
        )
        complete = self._expected <= {pod.uid for pod in self._kubelet.pods.values()}
        record.ready = wired and complete and agents_ready and now - self._quiet_since >= QUIET
        self._save_processes()

    def _programs(self) -> list[dict[str, Any] | None] | None:
        states: list[dict[str, Any] | None] = []
        for node in self.record.nodes:
            child = self.supervisor.children[f"agent-{node.name}"]
            try:
                state = child.get("/state")
                state["ready"] = child.ready()
                state.pop("interfaces", None)
                states.append(state)
            except OSError:
                states.append(None)
        return states

    # ---- teardown ---------------------------------------------------------------------

    def down(self) -> None:
        if self._kubelet is not None:
            self._kubelet.remove_all()
        if self._supervisor is not None:
            self._supervisor.stop_all()
        self._responders.close()
        if getattr(self, "_engine", None) is not None:
            self._engine.dispose()
        teardown(self.record)


def teardown(record: LabRecord) -> None:
    """Remove what the lab made: its pods' and nodes' namespaces, topics and database."""
    layout = Layout(record.name)
    ours = [ns for ns in existing() if layout.owns(ns)]
    remove_namespaces(sorted(set(ours) | set(record.namespaces)))
    try:
        backing.delete_topics(bootstrap=record.kafka_bootstrap, prefix=record.topic_prefix)
    except Exception as error:  # Kafka gone: nothing of ours left to delete there
        log.warning("could not delete the lab's topics: %s", error)
    try:
        backing.drop_database(record.database_url, name=record.database_name)
    except Exception as error:
        log.warning("could not drop the lab's database: %s", error)
