from __future__ import annotations

import pytest

from knm.core.domain.labels import (
    collection_of,
    label_key_error,
    label_value_error,
    parse_uses,
    selects,
)
from knm.core.domain.model import OwnerRef, Pod


@pytest.mark.parametrize("value", ["", "a", "redis-master", "A.b_c-9", "x" * 63])
def test_valid_label_values(value: str) -> None:
    assert label_value_error(value) is None


@pytest.mark.parametrize("value", ["-a", "a-", "a b", "x" * 64, "a/b", "é"])
def test_invalid_label_values(value: str) -> None:
    assert label_value_error(value) is not None


@pytest.mark.parametrize("key", ["name", "app.kubernetes.io/name", "knm.io/uses"])
def test_valid_label_keys(key: str) -> None:
    assert label_key_error(key) is None


@pytest.mark.parametrize("key", ["", "/name", "Bad_Prefix!/name", "-x"])
def test_invalid_label_keys(key: str) -> None:
    assert label_key_error(key) is not None


def test_an_empty_or_absent_selector_selects_nothing() -> None:
    assert not selects(None, {"a": "b"})
    assert not selects({}, {"a": "b"})
    assert selects({"a": "b"}, {"a": "b", "c": "d"})
    assert not selects({"a": "b", "c": "x"}, {"a": "b", "c": "d"})


def test_collection_is_the_label_else_the_top_owner_else_default() -> None:
    owners = (OwnerRef("ReplicaSet", "web-5d9f", "1"), OwnerRef("Deployment", "web", "2"))
    assert (
        collection_of(Pod("u", "ns", "p", labels={"name": "tier"}, owners=owners), label="name")
        == "tier"
    )
    assert collection_of(Pod("u", "ns", "p", owners=owners), label="name") == "web"
    assert collection_of(Pod("u", "ns", "p"), label="name") == "default"


def test_uses_combines_label_and_annotation_and_reports_bad_entries() -> None:
    targets, bad = parse_uses(
        namespace="shop", label="db", annotation="cache, other/queue,,a/b/c, bad value"
    )
    assert targets == (("other", "queue"), ("shop", "cache"), ("shop", "db"))
    assert bad == ["a/b/c", "bad value"]
