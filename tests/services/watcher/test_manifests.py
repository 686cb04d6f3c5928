"""Reading manifest files and folders into documents, and documents into objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.watcher.errors import BadManifestError
from services.watcher.manifests import SourceDocument, declared_objects, load_documents
from services.watcher.objects import Controller, Pod
from tests.services.watcher.builders import namespace, pod, rc, write_json, write_yaml


def names(documents: list[SourceDocument]) -> list[str]:
    return [document.body["metadata"]["name"] for document in documents]


def test_multi_document_yaml_in_order_skipping_empty_documents(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "app.yaml", pod("a"), None, rc("b"), pod("c"))

    documents = load_documents([path])

    assert names(documents) == ["a", "b", "c"]
    assert [(d.path, d.index, d.item) for d in documents] == [
        (path, 1, None),
        (path, 3, None),
        (path, 4, None),
    ]
    assert documents[1].body["kind"] == "ReplicationController"


def test_json_file_holds_one_object(tmp_path: Path) -> None:
    path = write_json(tmp_path / "pod.json", pod("web"))

    assert load_documents([path]) == [SourceDocument(path, 1, pod("web"))]


def test_a_list_expands_into_its_items(tmp_path: Path) -> None:
    listing = {"apiVersion": "v1", "kind": "List", "items": [pod("a"), rc("b")]}
    path = write_yaml(tmp_path / "list.yaml", pod("first"), listing)

    documents = load_documents([path])

    assert names(documents) == ["first", "a", "b"]
    assert [(d.index, d.item) for d in documents] == [(1, None), (2, 1), (2, 2)]


def test_a_typed_list_gives_its_items_their_kind(tmp_path: Path) -> None:
    # As `kubectl get --raw /api/v1/pods` serves it: the items carry no kind.
    item = {"metadata": {"name": "web", "namespace": "shop"}, "spec": {"containers": []}}
    path = write_json(
        tmp_path / "pods.json", {"apiVersion": "v1", "kind": "PodList", "items": [item]}
    )

    (document,) = load_documents([path])

    assert document.body["kind"] == "Pod"
    assert document.body["apiVersion"] == "v1"
    assert document.body["metadata"]["name"] == "web"


def test_an_empty_list_gives_nothing(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "list.yaml", {"apiVersion": "v1", "kind": "List", "items": None})

    assert load_documents([path]) == []


def test_folders_recurse_take_manifest_suffixes_sorted_by_path(tmp_path: Path) -> None:
    write_yaml(tmp_path / "b.yaml", pod("b"))
    write_yaml(tmp_path / "a.yml", pod("a"))
    write_json(tmp_path / "sub" / "c.json", pod("c"))
    write_yaml(tmp_path / "sub" / "deeper" / "d.YAML", pod("d"))
    (tmp_path / "notes.txt").write_text("kind: Pod\n")
    write_yaml(tmp_path / ".hidden.yaml", pod("hidden"))
    # A ConfigMap mounted as a volume keeps a second copy of each file in a hidden folder.
    write_yaml(tmp_path / "..2024_01_01" / "b.yaml", pod("copy"))

    documents = load_documents([tmp_path])

    assert names(documents) == ["a", "b", "c", "d"]


def test_files_and_folders_mix_and_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    first = write_yaml(tmp_path / "one" / "a.yaml", pod("a"))
    second = write_yaml(tmp_path / "two.yaml", pod("two"))

    documents = load_documents([second, tmp_path / "one", first])

    assert names(documents) == ["two", "a"]


def test_a_file_named_explicitly_is_read_whatever_its_suffix(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "manifest.txt", pod("web"))

    assert names(load_documents([path])) == ["web"]


def test_an_empty_folder_has_no_documents(tmp_path: Path) -> None:
    assert load_documents([tmp_path]) == []


# ---- errors ------------------------------------------------------------------------------


def bad(paths: list[Path]) -> str:
    with pytest.raises(BadManifestError) as caught:
        load_documents(paths)
    message = caught.value.message
    assert "\n" not in message
    assert str(caught.value) == message
    return message


def test_a_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    assert bad([missing]) == f"{missing}: no such file or directory"


def test_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    dangling = tmp_path / "gone.yaml"
    dangling.symlink_to(tmp_path / "elsewhere.yaml")

    assert bad([tmp_path]) == f"{dangling}: cannot read: No such file or directory"


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("metadata: {name: caf\xe9}\n".encode("latin-1"))

    assert bad([path]) == f"{path}: cannot read: not UTF-8 text"


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n  x: y\n")

    message = bad([path])

    assert message.startswith(f"{path}: invalid YAML at line 5: ")


def test_invalid_yaml_in_a_later_document(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: Pod\n---\nkind: Pod\nmetadata: {name: a\n")

    assert bad([path]).startswith(f"{path}: invalid YAML at line ")


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "kind": "Pod"\n  "metadata": {}\n}\n')

    assert bad([path]) == f"{path}: invalid JSON at line 3: Expecting ',' delimiter"


@pytest.mark.parametrize(
    ("text", "shape"),
    [("- kind: Pod\n", "a list"), ("just words\n", "a string"), ("42\n", "int")],
)
def test_a_document_that_is_not_a_map(tmp_path: Path, text: str, shape: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(f"kind: Namespace\n---\n{text}")

    assert bad([path]) == (
        f"{path}: document 2: not a map but {shape}; each document must be one Kubernetes object"
    )


def test_a_json_array_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_text("[]")

    assert bad([path]).startswith(f"{path}: document 1: not a map but a list")


def test_a_list_whose_items_are_not_a_list(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "list.yaml", {"kind": "List", "items": {"a": 1}})

    assert bad([path]) == f"{path}: document 1: List: items must be a list, not dict"


def test_a_list_item_that_is_not_a_map(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "list.yaml", {"kind": "List", "items": [pod("a"), "b"]})

    assert bad([path]) == f"{path}: document 1, item 2: not a map but a string"


# ---- documents into objects -------------------------------------------------------------


def test_objects_keep_their_document_as_origin(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "app.yaml", namespace("shop"), rc("web", namespace="shop"))

    declarations = declared_objects(load_documents([path]))

    assert [d.origin for d in declarations.objects] == [
        f"{path}: document 1",
        f"{path}: document 2",
    ]
    assert isinstance(declarations.objects[1].object, Controller)
    assert declarations.warnings == ()


def test_other_kinds_are_skipped_with_one_warning_each(tmp_path: Path) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once", "namespace": "ops"},
    }
    old = {"apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "d"}}
    path = write_yaml(tmp_path / "mixed.yaml", config, pod("web"), job, old)

    declarations = declared_objects(load_documents([path]))

    assert [type(d.object) for d in declarations.objects] == [Pod]
    assert declarations.warnings == (
        f"{path}: document 1: skipped v1 ConfigMap cfg: knm does not read this kind",
        f"{path}: document 3: skipped batch/v1 Job ops/once: knm does not read this kind",
        f"{path}: document 4: skipped extensions/v1beta1 Deployment default/d: "
        "knm does not read this kind",
    )


def test_endpoint_slices_and_network_policies_are_read_from_a_live_cluster_only(
    tmp_path: Path,
) -> None:
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "shop"},
        "spec": {"podSelector": {}},
    }
    slices = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-1"},
        "addressType": "IPv4",
    }
    path = write_yaml(tmp_path / "live.yaml", policy, slices, pod("web"))

    declarations = declared_objects(load_documents([path]))

    assert [type(d.object) for d in declarations.objects] == [Pod]
    assert declarations.warnings == (
        f"{path}: document 1: skipped NetworkPolicy shop/deny: "
        "knm reads this kind from a live cluster only",
        f"{path}: document 2: skipped EndpointSlice default/web-1: "
        "knm reads this kind from a live cluster only",
    )


def test_declared_nodes_are_skipped_because_nodes_are_simulated(tmp_path: Path) -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "big"}}
    path = write_yaml(tmp_path / "node.yaml", node)

    declarations = declared_objects(load_documents([path]))

    assert declarations.objects == ()
    assert declarations.warnings == (
        f"{path}: document 1: skipped Node big: nodes are simulated (see --nodes)",
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"apiVersion": "v1", "metadata": {"name": "a"}}, "kind is not set"),
        ({"kind": "Pod", "metadata": {"name": "a"}}, "Pod: apiVersion is not set"),
    ],
)
def test_a_document_without_a_type(tmp_path: Path, body: dict[str, object], reason: str) -> None:
    path = write_yaml(tmp_path / "untyped.yaml", body)

    with pytest.raises(BadManifestError) as caught:
        declared_objects(load_documents([path]))

    assert caught.value.message == f"{path}: document 1: {reason}"
