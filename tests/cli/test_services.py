"""`knm agent` as a node runs it: the Linux dataplane in a node namespace, serving CNI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knm.core.bus.kafka import KafkaBus
from knm.core.bus.protocol import OutgoingMessage
from knm.core.events.base import envelope
from knm.core.events.codec import encode
from knm.core.topics import Topics
from services.agent.cni.plugin import run
from services.agent.linux.links import find_link, ipv4_addresses
from services.agent.linux.namespaces import routing
from tests.runtime.fleet import free_port, knm, wait_for
from tests.services.agent.namespaces import Namespaces, namespaces
from tests.services.agent.node import attach
from tests.services.applier.builders import AT

POD = attach("p1", "10.0.0.5", name="web-1")


@pytest.fixture
def spaces() -> Iterator[Namespaces]:
    with namespaces() as made:
        yield made


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
        return json.loads(response.read())


def test_the_agent_wires_a_pod_for_knm_cni_and_leaves_it_wired_when_it_stops(
    kafka_bootstrap: str, spaces: Namespaces, tmp_path: Path
) -> None:
    node, box = spaces.make("node"), spaces.make("pod")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    env = {**os.environ, "KNM_KAFKA_BOOTSTRAP": kafka_bootstrap, "KNM_TOPIC_PREFIX": prefix}
    knm("topics", "create", env=env)
    bus = KafkaBus(bootstrap=kafka_bootstrap, client_id="test")
    publisher = bus.publisher()
    message = envelope(POD, key=f"interface/{POD.pod_uid}", occurred_at=AT)
    publisher.publish(
        [
            OutgoingMessage(
                topic=Topics(prefix=prefix).node_commands, key="n1", value=encode(message)
            )
        ]
    )
    publisher.close()
    directory = tempfile.mkdtemp(prefix="knmt-")
    sock = f"{directory}/agent.sock"
    port = free_port()
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "knm",
            "agent",
            "--node",
            "n1",
            "--dataplane",
            "linux",
            "--netns",
            spaces.name(node),
            "--cni-socket",
            sock,
            "--health-port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool:
            try:
                return bool(get(port, "/state")["replaying"] is False and os.path.exists(sock))
            except OSError:
                return False

        assert wait_for(ready, timeout=120, every=0.2), (tmp_path / "agent.log").read_text()
        assert os.stat(sock).st_mode & 0o777 == 0o600

        code, result = run(
            {
                "CNI_COMMAND": "ADD",
                "CNI_CONTAINERID": "c1",
                "CNI_NETNS": box,
                "CNI_IFNAME": "eth0",
                "CNI_ARGS": f"K8S_POD_NAMESPACE=shop;K8S_POD_NAME={POD.name}",
            },
            json.dumps(
                {"cniVersion": "1.0.0", "name": "knm", "type": "knm-cni", "agentSocket": sock}
            ).encode(),
        )

        assert code == 0, result
        state = get(port, "/state")
        assert [i["pod_uid"] for i in state["interfaces"]] == [POD.pod_uid]
        assert state["sandboxes"] == 1
    finally:
        agent.send_signal(signal.SIGTERM)
        exit_code = agent.wait(timeout=60)
        log.close()
    assert exit_code == 0
    assert not os.path.exists(sock)
    os.rmdir(directory)
    # Stopping the agent does not take the pods' network down.
    with routing(box) as ipr:
        eth = find_link(ipr, "eth0")
        assert eth is not None
        assert ipv4_addresses(ipr, eth.index) == {("10.0.0.5", 32)}
    with routing(node) as ipr:
        assert find_link(ipr, POD.ifname) is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataplane", "vpp"], "unknown dataplane 'vpp'"),
        (["--netns", "knmt-x"], "--netns is the node namespace of the linux dataplane"),
    ],
)
def test_agent_options_that_cannot_work_are_bad_input(args: list[str], message: str) -> None:
    result = knm("agent", "--node", "n1", *args, env=dict(os.environ), check=False)

    assert result.returncode == 2
    assert message in result.stderr
