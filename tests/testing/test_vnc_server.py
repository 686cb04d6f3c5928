"""The VNC test server keeps the real API server's rules, spoken to through the official
client library (and raw HTTP where the library would not send a bad body)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from vnc_api import vnc_api as vnc
from vnc_api.exceptions import BadRequest, NoIdError, RefsExistError

from knm.testing.vnc_server import VncTestServer


@pytest.fixture
def server() -> Iterator[VncTestServer]:
    with VncTestServer() as running:
        yield running


@pytest.fixture
def api(server: VncTestServer) -> Any:
    parts = urlsplit(server.url)
    return vnc.VncApi(
        api_server_host=parts.hostname,
        api_server_port=str(parts.port),
        auth_type="noauth",
        conf_file="/dev/null",
    )


def _network(api: Any, project: str, name: str) -> Any:
    vn = vnc.VirtualNetwork(name, parent_obj=vnc.Project(project))
    api.virtual_network_create(vn)
    return vn


def test_an_fq_name_is_unique_per_type(api: Any) -> None:
    api.project_create(vnc.Project("a"))
    with pytest.raises(RefsExistError):
        api.project_create(vnc.Project("a"))
    _network(api, "a", "n")
    # The same last name under another type is another object.
    api.network_policy_create(vnc.NetworkPolicy("n", parent_obj=vnc.Project("a")))


def test_uuids_are_assigned_or_taken_and_never_reused(api: Any, server: VncTestServer) -> None:
    project = vnc.Project("a")
    assigned = api.project_create(project)
    assert len(assigned) == 36
    vm = vnc.VirtualMachine("vm")
    vm.uuid = "0b6d7a5e-3c1f-4c9b-9d1e-1f2a3b4c5d6e"
    assert api.virtual_machine_create(vm) == vm.uuid
    clash = vnc.VirtualMachine("other")
    clash.uuid = vm.uuid
    with pytest.raises(RefsExistError):
        api.virtual_machine_create(clash)
    assert api.fq_name_to_id("virtual-machine", ["vm"]) == vm.uuid
    assert api.id_to_fq_name(vm.uuid) == ["vm"]
    with pytest.raises(NoIdError):
        api.fq_name_to_id("virtual-machine", ["nobody"])


def test_parents_must_exist_and_be_of_an_allowed_type(api: Any, server: VncTestServer) -> None:
    with pytest.raises(NoIdError):
        _network(api, "missing", "n")
    api.project_create(vnc.Project("a"))
    answer = requests.post(
        f"{server.url}/virtual-networks",
        json={
            "virtual-network": {
                "fq_name": ["default-domain", "a", "n"],
                "parent_type": "domain",
            }
        },
        timeout=5,
    )
    assert answer.status_code == 400
    assert "parent_type" in answer.text


def test_references_must_point_to_existing_objects(api: Any) -> None:
    api.project_create(vnc.Project("a"))
    vmi = vnc.VirtualMachineInterface("i", parent_obj=vnc.Project("a"))
    vmi.add_virtual_machine(vnc.VirtualMachine("nobody"))
    with pytest.raises(NoIdError):
        api.virtual_machine_interface_create(vmi)


def test_delete_is_refused_while_children_or_back_references_exist(api: Any) -> None:
    project = vnc.Project("a")
    api.project_create(project)
    vn = _network(api, "a", "n")
    with pytest.raises(RefsExistError):
        api.project_delete(id=project.uuid)
    vm = vnc.VirtualMachine("vm")
    api.virtual_machine_create(vm)
    vmi = vnc.VirtualMachineInterface("i", parent_obj=vnc.Project("a"))
    vmi.add_virtual_machine(vm)
    vmi.add_virtual_network(vn)
    api.virtual_machine_interface_create(vmi)
    with pytest.raises(RefsExistError):
        api.virtual_machine_delete(id=vm.uuid)
    with pytest.raises(RefsExistError):
        api.virtual_network_delete(id=vn.uuid)
    api.virtual_machine_interface_delete(id=vmi.uuid)
    api.virtual_machine_delete(id=vm.uuid)
    api.virtual_network_delete(id=vn.uuid)
    api.project_delete(id=project.uuid)
    with pytest.raises(NoIdError):
        api.project_delete(id=project.uuid)


def test_ref_update_adds_and_removes_references_with_attributes(api: Any) -> None:
    api.project_create(vnc.Project("a"))
    vn = _network(api, "a", "n")
    policy = vnc.NetworkPolicy("p", parent_obj=vnc.Project("a"))
    api.network_policy_create(policy)
    attr = vnc.VirtualNetworkPolicyType(sequence=vnc.SequenceType(0, 0))
    api.ref_update("virtual-network", vn.uuid, "network-policy", policy.uuid, None, "ADD", attr)
    read = api.virtual_network_read(id=vn.uuid)
    refs = read.get_network_policy_refs()
    assert [r["uuid"] for r in refs] == [policy.uuid]
    assert refs[0]["attr"].get_sequence().get_major() == 0
    with pytest.raises(RefsExistError):
        api.network_policy_delete(id=policy.uuid)
    api.ref_update("virtual-network", vn.uuid, "network-policy", policy.uuid, None, "DELETE")
    assert api.virtual_network_read(id=vn.uuid).get_network_policy_refs() is None
    api.network_policy_delete(id=policy.uuid)


def test_lists_answer_with_detail_and_by_parent(api: Any) -> None:
    for project in ("a", "b"):
        api.project_create(vnc.Project(project))
    a_uuid = api.fq_name_to_id("project", ["default-domain", "a"])
    for name in ("n1", "n2"):
        _network(api, "a", name)
    _network(api, "b", "n3")
    brief = api.virtual_networks_list()
    assert sorted(n["fq_name"][-1] for n in brief["virtual-networks"]) == ["n1", "n2", "n3"]
    in_a = api.virtual_networks_list(parent_id=a_uuid)
    assert sorted(n["fq_name"][-1] for n in in_a["virtual-networks"]) == ["n1", "n2"]
    detailed = api.virtual_networks_list(detail=True, parent_id=a_uuid)
    assert sorted(n.get_fq_name()[-1] for n in detailed) == ["n1", "n2"]
    assert all(isinstance(n, vnc.VirtualNetwork) for n in detailed)


def test_bodies_are_checked_against_the_librarys_type_definitions(
    api: Any, server: VncTestServer
) -> None:
    api.project_create(vnc.Project("a"))

    def create(body: dict[str, Any]) -> requests.Response:
        return requests.post(
            f"{server.url}/instance-ips",
            json={"instance-ip": {"fq_name": ["i"], **body}},
            timeout=5,
        )

    assert create({"no_such_property": 1}).status_code == 400
    assert create({"instance_ip_mode": "both"}).status_code == 400  # not in the enum
    assert create({"instance_ip_secondary": "yes"}).status_code == 400  # a boolean
    assert create({"virtual_network_refs": "n"}).status_code == 400  # a list
    bad_attr = {"virtual_network_refs": [{"to": ["default-domain", "a", "n"], "attr": {}}]}
    assert create(bad_attr).status_code == 400  # this reference takes no attribute
    assert create({"instance_ip_mode": "active-active"}).status_code == 200
    # Nested types too: a port outside its range, a field the type does not have.
    policy: dict[str, Any] = {
        "fq_name": ["default-domain", "a", "p"],
        "parent_type": "project",
        "network_policy_entries": {
            "policy_rule": [{"dst_ports": [{"start_port": 70000, "end_port": 70000}]}]
        },
    }
    answer = requests.post(
        f"{server.url}/network-policys", json={"network-policy": policy}, timeout=5
    )
    assert answer.status_code == 400
    assert "start_port" in answer.text
    policy["network_policy_entries"] = {"policy_rule": [{"colour": "red"}]}
    answer = requests.post(
        f"{server.url}/network-policys", json={"network-policy": policy}, timeout=5
    )
    assert answer.status_code == 400
    # A property the schema does not let an update change.
    ip = vnc.InstanceIp("j")
    ip.set_instance_ip_address("10.0.0.1")
    api.instance_ip_create(ip)
    ip = api.instance_ip_read(id=ip.uuid)
    ip.set_instance_ip_address("10.0.0.2")
    with pytest.raises(BadRequest):
        api.instance_ip_update(ip)


def test_injected_failures_are_5xx_or_dropped_connections(server: VncTestServer) -> None:
    server.fail_rate = 1.0
    seen: set[str] = set()
    for _ in range(40):
        try:
            answer = requests.get(f"{server.url}/projects", timeout=5)
            seen.add(str(answer.status_code))
        except requests.ConnectionError:
            seen.add("dropped")
    assert seen == {"500", "503", "dropped"}
