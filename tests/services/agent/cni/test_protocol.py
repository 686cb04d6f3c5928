from __future__ import annotations

import pytest

from services.agent.cni.protocol import (
    Attachment,
    ProtocolError,
    Request,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from services.agent.cni.spec import CniError, PodRef


def test_a_request_survives_the_wire() -> None:
    request = Request(
        command="ADD",
        container_id="c1",
        netns="/var/run/netns/x",
        ifname="eth0",
        pod=PodRef(uid="u1", namespace=None, name=None),
    )

    line = encode_request(request)

    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert decode_request(line.rstrip(b"\n")) == request


def test_replies_survive_the_wire() -> None:
    wired = Attachment(host_ifname="knm1", ip="10.0.0.5", mac="0a:58:0a:00:00:05", gateway="g")

    assert decode_reply(encode_reply(wired)) == wired
    assert decode_reply(encode_reply(None)) is None
    with pytest.raises(CniError) as error:
        decode_reply(encode_reply(CniError(11, "later", "the agent is starting")))
    assert (error.value.code, error.value.msg, error.value.details) == (
        11,
        "later",
        "the agent is starting",
    )


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[]",
        b'{"command": "ADD"}',
        b'{"command": "RESET", "pod": {}}',
        b'{"command": "ADD", "pod": {}, "container_id": 7, "netns": "", "ifname": "eth0"}',
        b'{"command": "ADD", "pod": {"uid": 1}, "container_id": "c", "netns": "", "ifname": "e"}',
    ],
)
def test_what_is_not_a_request_is_refused(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_request(line)
