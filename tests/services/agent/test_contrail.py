"""The agent's contrail mode against the vrouter port API test server: every local pod's
port registered with the fields the vrouter agent requires, naming the very objects the
contrail applier made in the VNC test server; removed with its pod; all registered again
within 2 s of a vrouter agent restart."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from bench.synthetic import tiers, write
from knm.core.settings import Settings
from knm.runtime.embedded import EmbeddedPipeline, _drain
from knm.testing.vnc_server import VncTestServer
from knm.testing.vrouter_server import VrouterTestServer, check_port
from services.agent.contrail.dataplane import ContrailDataplane
from services.agent.contrail.ports import HttpPortApi
from services.agent.recording import RecordingDataplane
from services.agent.service import Agent
from services.applier.contrail.backend import ContrailBackend
from services.applier.contrail.client import VncClient

NODE = "node-1"


@pytest.fixture
def vrouter() -> Iterator[VrouterTestServer]:
    with VrouterTestServer() as running:
        yield running


def all_back(vrouter: VrouterTestServer, adds: int) -> bool:
    return len(vrouter.ports) == 9 and vrouter.calls["add"] == adds


def wait_for(condition: Callable[[], bool], *, within: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, "not within the time allowed"
        time.sleep(0.01)
    return time.monotonic() - started


def test_ports_are_registered_removed_and_registered_again_after_a_restart(
    vrouter: VrouterTestServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "apps.yaml"
    write(manifest, tiers(namespaces=2, tiers_per_namespace=3, replicas=3))
    settings = Settings()
    with VncTestServer() as vnc_server:
        pipeline = EmbeddedPipeline(
            paths=[manifest],
            nodes=2,
            settings=settings,
            database_url=f"sqlite:///{tmp_path / 'knm.db'}",
            applier_backend=ContrailBackend(
                client=VncClient(url=vnc_server.url),
                cluster="c",
                pod_pools=settings.pod_pools,
                service_pools=settings.service_pools,
            ),
        )
        dataplane = ContrailDataplane(
            wiring=RecordingDataplane(), ports=HttpPortApi(url=vrouter.url), probe_interval=0.1
        )
        agent = Agent(node=NODE, bus=pipeline.bus, topics=pipeline.topics, dataplane=dataplane)
        try:
            pipeline.start()
            pipeline.publish()
            pipeline.settle()
            agent.start()
            _drain(agent.step)
            local = [p for p in pipeline.document()["pods"] if p["node"] == NODE]
            assert len(local) == 9
            ports = {p["instance-id"]: p for p in vrouter.ports.values()}
            assert set(ports) == {p["uid"] for p in local}
            store = {(o.type, o.fq_name): o for o in vnc_server.store.snapshot()}
            for pod in local:
                port = ports[pod["uid"]]
                assert check_port(port) == port
                vmi = store[
                    ("virtual-machine-interface", ("default-domain", pod["namespace"], pod["uid"]))
                ]
                namespace, _, network = pod["network"].partition("/")
                vn = store[("virtual-network", ("default-domain", namespace, network))]
                project = store[("project", ("default-domain", namespace))]
                assert port["id"] == vmi.uuid
                assert port["vn-id"] == vn.uuid
                assert port["vm-project-id"] == project.uuid
                assert (
                    port["mac-address"]
                    == vmi.props["virtual_machine_interface_mac_addresses"]["mac_address"][0]
                )
                assert port["ip-address"] == pod["ip"]
                assert port["system-name"] == dataplane.registered[pod["uid"]]["system-name"]
                assert port["display-name"] == f"{pod['namespace']}/{pod['name']}"

            # The vrouter agent restarts (down a while, or back at once): every port is
            # registered again within 2 s of it serving again.
            for downtime in (0.3, 0.0):
                registered = vrouter.calls["add"]
                resyncs = dataplane.resyncs
                vrouter.restart(downtime=downtime)
                took = wait_for(partial(all_back, vrouter, registered + 9), within=2.0)
                assert {p["instance-id"] for p in vrouter.ports.values()} == set(ports)
                assert vrouter.calls["add"] == registered + 9
                assert dataplane.resyncs == resyncs + 1
                print(f"re-registered 9 ports {took:.3f} s after a restart ({downtime} s down)")

            # A pod goes: its port goes with it.
            write(manifest, tiers(namespaces=2, tiers_per_namespace=3, replicas=1))
            pipeline.publish()
            pipeline.settle()
            _drain(agent.step)
            remaining = {p["uid"] for p in pipeline.document()["pods"] if p["node"] == NODE}
            assert {p["instance-id"] for p in vrouter.ports.values()} == remaining
            assert len(remaining) < 9
            assert vrouter.calls["delete"] == 9 - len(remaining)
        finally:
            agent.close()
            pipeline.close()


def test_a_port_the_vrouter_agent_would_refuse_is_refused() -> None:
    good = {
        "type": 1,
        "id": "0b6d7a5e-3c1f-4c9b-9d1e-1f2a3b4c5d6e",
        "instance-id": "1b6d7a5e-3c1f-4c9b-9d1e-1f2a3b4c5d6e",
        "display-name": "ns/pod",
        "ip-address": "10.0.0.1",
        "ip6-address": "",
        "rx-vlan-id": -1,
        "tx-vlan-id": -1,
        "vn-id": "2b6d7a5e-3c1f-4c9b-9d1e-1f2a3b4c5d6e",
        "vm-project-id": "",
        "mac-address": "02:00:00:00:00:01",
        "system-name": "knm0123456789a",
    }
    assert check_port(good) == good
    from knm.testing.vrouter_server import PortError

    for key, value in (
        ("id", "not-a-uuid"),
        ("mac-address", "02:00"),
        ("ip-address", "10.0.0"),
        ("type", 7),
        ("system-name", "a-name-far-too-long"),
        ("rx-vlan-id", "none"),
    ):
        with pytest.raises(PortError):
            check_port({**good, key: value})
    with pytest.raises(PortError):
        check_port({k: v for k, v in good.items() if k != "vn-id"})
