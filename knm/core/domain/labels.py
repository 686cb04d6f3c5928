"""Kubernetes naming and label rules, selectors, and the seed's collection and `uses` rules."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from knm.core.domain.model import CollectionRef, NetworkSettings, Pod

_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

DEFAULT_COLLECTION = "default"


def label_key_error(key: str) -> str | None:
    """Why `key` is not a valid label key, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"label key {key!r}: prefix must be a DNS subdomain"
    if not _LABEL_NAME.match(name):
        return (
            f"label key {key!r}: name must be 1-63 characters of [A-Za-z0-9-_.], "
            "starting and ending with an alphanumeric"
        )
    return None


def label_value_error(value: str) -> str | None:
    """Why `value` is not a valid label value, or None."""
    if value == "" or _LABEL_NAME.match(value):
        return None
    return (
        f"label value {value!r} must be at most 63 characters of [A-Za-z0-9-_.], "
        "starting and ending with an alphanumeric"
    )


def labels_errors(labels: Mapping[str, str]) -> list[str]:
    errors = []
    for key, value in labels.items():
        for error in (label_key_error(key), label_value_error(value)):
            if error:
                errors.append(error)
    return errors


def namespace_name_error(name: str) -> str | None:
    if _DNS_LABEL.match(name):
        return None
    return f"namespace name {name!r} must be a DNS label (lowercase alphanumerics and '-')"


def object_name_error(name: str) -> str | None:
    if len(name) <= 253 and _DNS_SUBDOMAIN.match(name):
        return None
    return f"name {name!r} must be a DNS subdomain (lowercase alphanumerics, '-' and '.')"


def service_name_error(name: str) -> str | None:
    if _DNS_1035_LABEL.match(name):
        return None
    return f"service name {name!r} must be a DNS-1035 label (start with a letter)"


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """Equality-based selection; an empty or absent selector selects nothing (as Services)."""
    if not selector:
        return False
    return all(labels.get(key) == value for key, value in selector.items())


def collection_of(pod: Pod, *, label: str) -> str:
    """The seed's tier: the `name` label, else the top owning controller, else default."""
    value = pod.labels.get(label)
    if value:
        return value
    if pod.owners:
        return pod.owners[-1].name
    return DEFAULT_COLLECTION


def parse_uses(
    *, namespace: str, label: str | None, annotation: str | None
) -> tuple[tuple[CollectionRef, ...], list[str]]:
    """The collections a pod declares it uses, and the entries that could not be read."""
    found: dict[CollectionRef, None] = {}
    bad: list[str] = []
    entries: Iterable[str] = [label] if label else []
    if annotation:
        entries = [*entries, *annotation.split(",")]
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        ns, slash, name = entry.rpartition("/")
        target_ns = ns if slash else namespace
        if (slash and namespace_name_error(target_ns)) or not name or label_value_error(name):
            bad.append(entry)
            continue
        found[(target_ns, name)] = None
    return tuple(sorted(found)), bad


def uses_of(pod: Pod, settings: NetworkSettings) -> tuple[tuple[CollectionRef, ...], list[str]]:
    return parse_uses(
        namespace=pod.namespace,
        label=pod.labels.get(settings.uses_label),
        annotation=pod.annotations.get(settings.uses_annotation),
    )


def pod_network_name(namespace: str, collection: str) -> str:
    return f"{namespace}/{collection}"


def service_network_name(namespace: str, service: str) -> str:
    return f"{namespace}/service-{service}"


def policy_name(from_network: str, to_network: str) -> str:
    return f"{from_network}->{to_network}"
