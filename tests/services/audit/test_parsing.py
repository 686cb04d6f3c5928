from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.audit import cursor
from services.audit.parsing import (
    InvalidValueError,
    check_label,
    check_subdomain,
    ip_text,
    parse_ip,
    parse_time,
    split_object,
)


@given(
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
)
def test_rfc3339_times_are_read_as_the_instant_they_name(moment: datetime, minutes: int) -> None:
    zone = timezone(timedelta(minutes=minutes))
    local = moment.replace(tzinfo=zone)
    parsed = parse_time(local.isoformat())
    assert parsed == local
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-11-27T14:02:00Z", datetime(2026, 11, 27, 14, 2, tzinfo=UTC)),
        ("2026-11-27t14:02:00z", datetime(2026, 11, 27, 14, 2, tzinfo=UTC)),
        ("2026-11-27 14:02:00+01:00", datetime(2026, 11, 27, 13, 2, tzinfo=UTC)),
        ("2026-11-27T14:02:00-00:00", datetime(2026, 11, 27, 14, 2, tzinfo=UTC)),
        ("2026-11-27T14:02:00.5Z", datetime(2026, 11, 27, 14, 2, 0, 500_000, tzinfo=UTC)),
        # Beyond microseconds, the database's precision: cut, not rounded.
        ("2026-11-27T14:02:00.1234569Z", datetime(2026, 11, 27, 14, 2, 0, 123_456, tzinfo=UTC)),
        # Hours from year 1 or 9999 in UTC: before or after anything that was recorded.
        ("0001-01-01T00:00:00+05:00", datetime.min.replace(tzinfo=UTC)),
        ("9999-12-31T23:00:00-05:00", datetime.max.replace(tzinfo=UTC)),
    ],
)
def test_rfc3339_spellings(text: str, instant: datetime) -> None:
    assert parse_time(text) == instant


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-11-27",
        "2026-11-27T14:02Z",
        "2026-11-27T14:02:00",
        "2026-11-27T14:02:00+0100",
        "2026-11-27T24:00:00Z",
        "2026-11-27T14:02:00.Z",
        "\uff11\uff12\uff13\uff14-11-27T14:02:00Z",  # full-width digits
        "2026-11-27T14:02:00Z\n",
    ],
)
def test_what_is_not_rfc3339_is_refused(text: str) -> None:
    with pytest.raises(InvalidValueError, match=r"RFC 3339|not a valid time"):
        parse_time(text)


@pytest.mark.parametrize("text", ["10.0.0.1", "0.0.0.0", "255.255.255.255"])
def test_addresses(text: str) -> None:
    assert str(parse_ip(text)) == text


@pytest.mark.parametrize("text", ["", "10.0.0", "010.0.0.1", "10.0.0.1/32", " 10.0.0.1", "::1"])
def test_what_is_not_an_address_is_refused(text: str) -> None:
    with pytest.raises(InvalidValueError, match="is not an IPv4 address"):
        parse_ip(text)


def test_names() -> None:
    assert check_label("shop-1", what="namespace") == "shop-1"
    assert check_subdomain("web-1.example", what="pod name") == "web-1.example"
    for bad in ("", "-a", "a-", "A", "a_b", "a" * 64):
        with pytest.raises(InvalidValueError, match="is not a valid namespace"):
            check_label(bad, what="namespace")
    with pytest.raises(InvalidValueError, match="at most 253"):
        check_subdomain("a" * 254, what="pod name")


def test_objects_are_namespace_slash_name() -> None:
    assert split_object("shop/web-1", what="pod") == ("shop", "web-1")
    with pytest.raises(InvalidValueError, match="NAMESPACE/NAME"):
        split_object("web-1", what="pod")


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_cursors_carry_a_sequence_number(seq: int) -> None:
    assert cursor.decode(cursor.encode(seq)) == seq


@given(st.from_regex(cursor.PATTERN, fullmatch=True))
def test_every_string_the_pattern_admits_is_a_cursor(text: str) -> None:
    assert cursor.encode(cursor.decode(text)) == text


@given(st.text(max_size=20))
def test_anything_else_is_refused(text: str) -> None:
    try:
        seq = cursor.decode(text)
    except InvalidValueError:
        return
    assert cursor.encode(seq) == text


@given(st.text(alphabet="0123456789.", max_size=16) | st.ip_addresses(v=4).map(str) | st.text())
def test_an_address_s_text_is_what_the_address_writes(text: str) -> None:
    try:
        expected = str(parse_ip(text))
    except InvalidValueError:
        with pytest.raises(InvalidValueError):
            ip_text(text)
    else:
        assert ip_text(text) == expected
