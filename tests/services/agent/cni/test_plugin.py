"""knm-cni's side of the spec: parameters, configuration, results and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.agent.cni.plugin import run
from services.agent.recording import RecordingDataplane
from tests.services.agent.node import NodeAgent, attach, running_agent

POD = attach("p1", "10.0.0.5", name="web-1")
KNM_CNI = Path(sys.executable).parent / "knm-cni"


def config(**fields: Any) -> bytes:
    document: dict[str, Any] = {"cniVersion": "1.0.0", "name": "knm", "type": "knm-cni"}
    document.update(fields)
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


def environ(command: str, **overrides: str | None) -> dict[str, str]:
    values: dict[str, str | None] = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "c0ffee",
        "CNI_NETNS": "/proc/self/ns/net",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME={POD.name}",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def error_of(outcome: tuple[int, dict[str, Any] | None]) -> tuple[int, str]:
    code, document = outcome
    assert code != 0
    assert document is not None
    assert set(document) == {"cniVersion", "code", "msg", "details"}
    return document["code"], document["msg"]


@pytest.fixture
def node() -> Iterator[NodeAgent]:
    with running_agent(RecordingDataplane(), commands=(POD,)) as running:
        yield running


# -- VERSION and what is wrong before the agent is asked ----------------------------------


def test_version_lists_what_the_plugin_speaks() -> None:
    assert run({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}') == (
        0,
        {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]},
    )
    assert run({"CNI_COMMAND": "VERSION"}, b"")[0] == 0


@pytest.mark.parametrize(
    ("stdin", "code"),
    [
        (b"{not json", 6),
        (b"\xff\xfe", 6),
        (b"[1, 2]", 6),
        (b"", 6),
        (config(cniVersion=None), 7),
        (config(cniVersion="0.4.0"), 1),
        (config(cniVersion="1.1.0"), 1),
        (config(name=None), 7),
        (config(name="bad name"), 7),
        (config(type=None), 7),
        (config(type="../knm-cni"), 7),
        (config(agentSocket="relative.sock"), 7),
        (config(prevResult=[]), 7),
    ],
)
def test_bad_configuration_gets_the_specs_error(stdin: bytes, code: int) -> None:
    assert error_of(run(environ("ADD"), stdin))[0] == code


def test_an_error_echoes_the_configurations_version() -> None:
    _, document = run(environ("ADD"), config(cniVersion="0.4.0"))

    assert document == {
        "cniVersion": "0.4.0",
        "code": 1,
        "msg": "CNI version 0.4.0 is not supported",
        "details": "knm-cni supports 1.0.0",
    }


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"CNI_COMMAND": None}, "CNI_COMMAND"),
        ({"CNI_COMMAND": "RESET"}, "CNI_COMMAND"),
        ({"CNI_COMMAND": "GC"}, "CNI_COMMAND"),
        ({"CNI_COMMAND": "STATUS"}, "CNI_COMMAND"),
        ({"CNI_CONTAINERID": None}, "CNI_CONTAINERID"),
        ({"CNI_CONTAINERID": "-leading-dash"}, "CNI_CONTAINERID"),
        ({"CNI_CONTAINERID": "a/b"}, "CNI_CONTAINERID"),
        ({"CNI_NETNS": None}, "CNI_NETNS"),
        ({"CNI_NETNS": "/var/run/netns/knmt-no-such-namespace"}, "CNI_NETNS"),
        ({"CNI_IFNAME": None}, "CNI_IFNAME"),
        ({"CNI_IFNAME": "a-name-too-long-for-linux"}, "CNI_IFNAME"),
        ({"CNI_IFNAME": "eth:0"}, "CNI_IFNAME"),
        ({"CNI_ARGS": "K8S_POD_NAME"}, "CNI_ARGS"),
        ({"CNI_ARGS": "IgnoreUnknown=1"}, "CNI_ARGS"),
    ],
)
def test_bad_parameters_are_named_in_the_error(
    overrides: dict[str, str | None], named: str
) -> None:
    code, msg = error_of(run(environ("ADD", **overrides), config()))

    assert code == 4
    assert named in msg


def test_without_an_agent_the_runtime_is_told_to_retry(tmp_path: Path) -> None:
    missing = str(tmp_path / "agent.sock")

    code, msg = error_of(run(environ("ADD"), config(agentSocket=missing)))

    assert (code, msg) == (11, "the knm agent is not running on this node")


# -- with the agent -----------------------------------------------------------------------


def test_add_returns_the_pods_interface(node: NodeAgent) -> None:
    code, result = run(environ("ADD"), config(agentSocket=node.socket))

    assert code == 0
    assert result == {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": POD.ifname},
            {"name": "eth0", "mac": POD.mac, "sandbox": "/proc/self/ns/net"},
        ],
        "ips": [{"address": "10.0.0.5/32", "gateway": "169.254.1.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
        "dns": {},
    }


def test_the_pod_is_found_by_uid_alone(node: NodeAgent) -> None:
    code, result = run(
        environ("ADD", CNI_ARGS=f"K8S_POD_UID={POD.pod_uid}"), config(agentSocket=node.socket)
    )

    assert code == 0
    assert result is not None
    assert result["ips"][0]["address"] == "10.0.0.5/32"


def test_check_and_del_after_add(node: NodeAgent) -> None:
    added = run(environ("ADD"), config(agentSocket=node.socket))[1]

    assert run(environ("CHECK"), config(agentSocket=node.socket, prevResult=added)) == (0, None)
    assert run(environ("DEL"), config(agentSocket=node.socket)) == (0, None)
    assert run(environ("DEL"), config(agentSocket=node.socket)) == (0, None)
    assert node.agent.interfaces == {}


def test_del_needs_neither_the_namespace_nor_the_pods_name(node: NodeAgent) -> None:
    run(environ("ADD"), config(agentSocket=node.socket))

    deleted = run(environ("DEL", CNI_NETNS=None, CNI_ARGS=None), config(agentSocket=node.socket))

    assert deleted == (0, None)
    assert node.agent.interfaces == {}
    assert node.agent.sandboxes == {}


def test_check_of_a_pod_the_node_does_not_have_is_an_unknown_container(node: NodeAgent) -> None:
    code, _ = error_of(
        run(
            environ("CHECK", CNI_ARGS="K8S_POD_NAMESPACE=shop;K8S_POD_NAME=nobody"),
            config(agentSocket=node.socket),
        )
    )

    assert code == 3


def test_check_against_another_address_than_the_last_adds(node: NodeAgent) -> None:
    added = run(environ("ADD"), config(agentSocket=node.socket))[1]
    assert added is not None
    added["ips"][0]["address"] = "10.0.0.77/32"

    code, msg = error_of(run(environ("CHECK"), config(agentSocket=node.socket, prevResult=added)))

    assert (code, msg) == (101, "the pod's address is not the one of its last ADD")


def test_add_of_a_pod_the_allocator_never_announces_is_retried_later(node: NodeAgent) -> None:
    code, msg = error_of(
        run(
            environ("ADD", CNI_ARGS="K8S_POD_NAMESPACE=shop;K8S_POD_NAME=nobody"),
            config(agentSocket=node.socket),
        )
    )

    assert code == 11
    assert "has no interface on node n1 yet" in msg


# -- the executable -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdin", "overrides", "code"),
    [
        (b"{malformed", {}, 6),
        (config(cniVersion="0.3.1"), {}, 1),
        (config(), {"CNI_CONTAINERID": None}, 4),
    ],
)
def test_the_executable_prints_the_error_and_exits_non_zero(
    stdin: bytes, overrides: dict[str, str | None], code: int
) -> None:
    env = {**environ("ADD", **overrides), "PATH": os.environ.get("PATH", "")}

    done = subprocess.run(
        [str(KNM_CNI)], input=stdin, env=env, capture_output=True, check=False, timeout=30
    )

    assert done.returncode == 1
    document = json.loads(done.stdout)
    assert document["code"] == code
    assert set(document) == {"cniVersion", "code", "msg", "details"}


def test_the_executable_answers_version() -> None:
    done = subprocess.run(
        [str(KNM_CNI)],
        input=b'{"cniVersion": "1.0.0"}',
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        check=False,
        timeout=30,
    )

    assert done.returncode == 0
    assert json.loads(done.stdout) == {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]}


def test_the_plugin_imports_nothing_heavy() -> None:
    # The runtime starts the plugin for every pod: no pydantic, sqlalchemy, kafka or
    # netlink library on its import path.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, services.agent.cni.plugin; print(' '.join(sorted(sys.modules)))",
        ],
        capture_output=True,
        check=True,
        text=True,
        timeout=30,
    )
    loaded = set(done.stdout.split())
    heavy = {"pydantic", "sqlalchemy", "kafka", "pyroute2", "knm", "yaml", "dataclasses"}
    assert not heavy & loaded


def test_unreadable_input_is_an_io_failure(tmp_path: Path) -> None:
    # Standard input open for writing only: reading it fails (EBADF).
    descriptor = os.open(tmp_path / "input", os.O_WRONLY | os.O_CREAT)
    try:
        done = subprocess.run(
            [str(KNM_CNI)],
            stdin=descriptor,
            env=environ("ADD"),
            capture_output=True,
            check=False,
            timeout=30,
        )
    finally:
        os.close(descriptor)

    assert done.returncode == 1
    assert json.loads(done.stdout)["code"] == 5
