"""knm-cni driven by the reference runtime, `cnitool` (containernetworking/cni), against
an agent wiring a real node namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from services.agent.linux.links import all_links, find_link, ipv4_addresses
from services.agent.linux.namespaces import routing
from services.agent.linux.wiring import pod_of
from tests.services.agent.namespaces import Namespaces
from tests.services.agent.node import NodeAgent, attach, linux_dataplane, running_agent

POD = attach("p1", "10.0.0.5", name="web-1")
# Where the venv installed the knm-cni executable.
PLUGINS = os.path.dirname(sys.executable)


def cnitool() -> str:
    path = os.environ.get("KNM_CNITOOL")
    if not path:
        pytest.fail(
            "KNM_CNITOOL is not set: run `make test`, or "
            '`eval "$(knm dev services env)"` after `knm dev services up`'
        )
    if not os.access(path, os.X_OK):
        pytest.fail(f"KNM_CNITOOL={path} is not an executable")
    return path


@dataclass
class Runtime:
    """cnitool with a network configuration of its own."""

    tool: str
    network: str
    confdir: str
    cni_args: str

    def configure(self, **plugin: Any) -> None:
        document = {"cniVersion": "1.0.0", "name": self.network, "plugins": [plugin]}
        with open(f"{self.confdir}/10-knm.conflist", "w") as file:
            json.dump(document, file)

    def __call__(self, command: str, netns: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "NETCONFPATH": self.confdir,
            "CNI_PATH": PLUGINS,
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": self.cni_args,
        }
        return subprocess.run(
            [self.tool, command, self.network, netns],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )


@pytest.fixture
def node(spaces: Namespaces) -> str:
    return spaces.make("node")


@pytest.fixture
def agent(node: str) -> Iterator[NodeAgent]:
    with running_agent(linux_dataplane(node), commands=(POD,)) as running:
        yield running


@pytest.fixture
def runtime(spaces: Namespaces, agent: NodeAgent) -> Iterator[Runtime]:
    confdir = tempfile.mkdtemp(prefix="knmt-netconf-")
    tool = Runtime(
        tool=cnitool(),
        network=f"knmt-{spaces.run}",
        confdir=confdir,
        cni_args=f"K8S_POD_NAMESPACE={POD.namespace};K8S_POD_NAME={POD.name};"
        f"K8S_POD_UID={POD.pod_uid}",
    )
    tool.configure(type="knm-cni", agentSocket=agent.socket)
    yield tool
    shutil.rmtree(confdir, ignore_errors=True)


def knm_links(node: str) -> list[str]:
    with routing(node) as ipr:
        return [link.name for link in all_links(ipr) if pod_of(link) is not None]


def test_add_check_del_leave_nothing_behind(
    spaces: Namespaces, node: str, runtime: Runtime
) -> None:
    box = spaces.make("pod")

    added = runtime("add", box)

    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    assert result["cniVersion"] == "1.0.0"
    assert result["interfaces"] == [
        {"name": POD.ifname},
        {"name": "eth0", "mac": POD.mac, "sandbox": box},
    ]
    assert result["ips"] == [{"address": "10.0.0.5/32", "gateway": "169.254.1.1", "interface": 1}]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    with routing(box) as ipr:
        eth = find_link(ipr, "eth0")
        assert eth is not None
        assert ipv4_addresses(ipr, eth.index) == {("10.0.0.5", 32)}
    assert knm_links(node) == [POD.ifname]

    checked = runtime("check", box)
    assert checked.returncode == 0, checked.stderr

    deleted = runtime("del", box)
    assert deleted.returncode == 0, deleted.stderr
    with routing(box) as ipr:
        assert [link.name for link in all_links(ipr)] == ["lo"]
    assert knm_links(node) == []

    again = runtime("del", box)
    assert again.returncode == 0, again.stderr


def test_check_of_a_sandbox_the_plugin_never_wired_fails(
    spaces: Namespaces, runtime: Runtime
) -> None:
    wired, other = spaces.make("pod"), spaces.make("other")
    assert runtime("add", wired).returncode == 0

    # cnitool names the container after its namespace: this one was never added.
    checked = runtime("check", other)

    assert checked.returncode != 0
    assert "is not wired" in checked.stderr
    assert runtime("del", wired).returncode == 0


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        ({"type": "knm-cni", "agentSocket": "relative.sock"}, "agentSocket must be an absolute"),
        ({"type": "knm-cni", "agentSocket": "/run/knm/knmt-nobody.sock"}, "agent is not running"),
    ],
)
def test_a_failing_add_reaches_the_runtime_as_the_plugins_error(
    spaces: Namespaces, node: str, runtime: Runtime, plugin: dict[str, Any], message: str
) -> None:
    box = spaces.make("pod")
    runtime.configure(**plugin)

    added = runtime("add", box)

    assert added.returncode != 0
    assert message in added.stderr
    assert knm_links(node) == []
