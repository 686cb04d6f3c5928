"""What a caller may name (addresses, instants, Kubernetes names, cursors) and the one
line that says what is wrong with a bad one. The API and the command line share them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from ipaddress import AddressValueError, IPv4Address


class InvalidValueError(ValueError):
    """A value a caller gave that cannot name anything; the message says why."""


# Kubernetes names (DNS-1123): namespaces and services are labels, pods and nodes
# subdomains. Networks are "<namespace>/<collection>" or "<namespace>/service-<name>",
# and a collection is a label value or a controller's name.
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
LABEL_PATTERN = rf"^{_LABEL}$"
LABEL_MAX = 63
SUBDOMAIN_PATTERN = rf"^{_LABEL}(\.{_LABEL})*$"
SUBDOMAIN_MAX = 253
_SEGMENT = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
SEGMENT_PATTERN = rf"^{_SEGMENT}$"
NETWORK_PATTERN = rf"^{_LABEL}/{_SEGMENT}$"
NETWORK_MAX = LABEL_MAX + 1 + SUBDOMAIN_MAX

# RFC 3339, section 5.6 (with the space its note allows instead of "T").
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
TIME_EXAMPLE = "2026-11-27T14:02:00Z"
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def parse_ip(text: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except AddressValueError:
        raise InvalidValueError(
            f"{text!r} is not an IPv4 address (four decimal numbers 0-255, e.g. 10.0.3.7)"
        ) from None


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


def ip_text(text: str) -> str:
    """`str(parse_ip(text))`: an address is written only one way (no leading zeros), so
    one that matches that way is its own text, found without building an IPv4Address."""
    if _IPV4.fullmatch(text):
        return text
    return str(parse_ip(text))


def parse_time(text: str) -> datetime:
    """An RFC 3339 time, in UTC; microseconds are the database's precision."""
    found = _RFC3339.fullmatch(text)
    if found is None:
        raise InvalidValueError(
            f"{text!r} is not an RFC 3339 time with a UTC offset (e.g. {TIME_EXAMPLE})"
        )
    year, month, day, hour, minute, second = map(int, found.group(1, 2, 3, 4, 5, 6))
    fraction, zulu, sign, offset_hours, offset_minutes = found.group(7, 8, 9, 10, 11)
    if second == 60:
        raise InvalidValueError(f"{text!r}: leap seconds are not supported")
    utc = zulu is not None or offset_hours == offset_minutes == "00"
    if not utc and (int(offset_hours) > 23 or int(offset_minutes) > 59):
        raise InvalidValueError(f"{text!r}: the UTC offset is out of range")
    micros = int((fraction[1:] + "000000")[:6]) if fraction else 0
    try:
        local = datetime(year, month, day, hour, minute, second, micros, UTC if utc else None)
    except ValueError as error:
        raise InvalidValueError(f"{text!r} is not a valid time: {error}") from None
    if utc:
        return local
    offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
    try:
        return local.replace(tzinfo=timezone(-offset if sign == "-" else offset)).astimezone(UTC)
    except OverflowError:
        # Within hours of year 1 or 9999 in UTC: before or after anything recorded.
        return _EARLIEST if local.year == 1 else _LATEST


def _named(text: str, *, what: str, pattern: str, longest: int, rule: str) -> str:
    if len(text) > longest or re.fullmatch(pattern, text) is None:
        raise InvalidValueError(
            f"{text!r} is not a valid {what}: {rule}; at most {longest} characters"
        )
    return text


_LABEL_RULE = "lowercase letters, digits and '-', starting and ending with a letter or digit"


def check_label(text: str, *, what: str) -> str:
    """A namespace or service name (a DNS-1123 label)."""
    return _named(text, what=what, pattern=LABEL_PATTERN, longest=LABEL_MAX, rule=_LABEL_RULE)


def check_subdomain(text: str, *, what: str) -> str:
    """A pod or node name (a DNS-1123 subdomain)."""
    return _named(
        text,
        what=what,
        pattern=SUBDOMAIN_PATTERN,
        longest=SUBDOMAIN_MAX,
        rule=f"dot-separated parts of {_LABEL_RULE}",
    )


def check_segment(text: str) -> str:
    """The part of a network's name after its namespace (a collection, or service-<name>)."""
    return _named(
        text,
        what="network name",
        pattern=SEGMENT_PATTERN,
        longest=SUBDOMAIN_MAX,
        rule="letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
    )


def check_network(text: str) -> str:
    """A network's full name, `<namespace>/<collection>` or `<namespace>/service-<name>`."""
    return _named(
        text,
        what="network",
        pattern=NETWORK_PATTERN,
        longest=NETWORK_MAX,
        rule="<namespace>/<collection> or <namespace>/service-<service>",
    )


def split_object(text: str, *, what: str) -> tuple[str, str]:
    """`NAMESPACE/NAME` as the command line takes it."""
    namespace, slash, name = text.partition("/")
    if not slash:
        raise InvalidValueError(f"{text!r}: give the {what} as NAMESPACE/NAME")
    return check_label(namespace, what="namespace"), name
