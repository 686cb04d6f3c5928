"""The agent's CNI socket: its file, its one-request connections, its failures."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator

import pytest

from services.agent.cni.protocol import Attachment, Request, ask
from services.agent.cni.server import CniServer, SocketInUseError
from services.agent.cni.spec import ADD, CHECK, DEL, CniError, PodRef

WIRED = Attachment(
    host_ifname="knm0123456789a", ip="10.0.0.5", mac="0a:58:0a:00:00:05", gateway="169.254.1.1"
)


def request(command: str) -> Request:
    return Request(
        command=command,
        container_id="c1",
        netns="/var/run/netns/x",
        ifname="eth0",
        pod=PodRef(uid=None, namespace="shop", name="web-1"),
    )


class Handler:
    """Answers as an agent would, and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[Request] = []
        self.release = threading.Event()
        self.release.set()

    def cni_add(self, request: Request) -> Attachment:
        self.asked.append(request)
        self.release.wait(10)
        return WIRED

    def cni_check(self, request: Request) -> Attachment:
        self.asked.append(request)
        raise CniError(3, "not wired", "eth0 is missing")

    def cni_del(self, request: Request) -> None:
        self.asked.append(request)
        raise RuntimeError("netlink went away")


@pytest.fixture
def directory() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="knmt-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def handler() -> Handler:
    return Handler()


@pytest.fixture
def server(directory: str, handler: Handler) -> Iterator[CniServer]:
    served = CniServer(path=f"{directory}/run/agent.sock", handler=handler)
    served.start()
    yield served
    served.close()


def test_the_socket_is_the_agents_alone(server: CniServer) -> None:
    mode = os.stat(server.path).st_mode

    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_each_command_reaches_the_handler_and_errors_come_back_as_cni_errors(
    server: CniServer, handler: Handler, caplog: pytest.LogCaptureFixture
) -> None:
    # At INFO, as services log: a refusal is logged on its way back.
    caplog.set_level(logging.INFO, logger="knm")
    assert ask(server.path, request(ADD), timeout=5) == WIRED
    with pytest.raises(CniError) as refused:
        ask(server.path, request(CHECK), timeout=5)
    with pytest.raises(CniError) as failed:
        ask(server.path, request(DEL), timeout=5)

    assert (refused.value.code, refused.value.msg, refused.value.details) == (
        3,
        "not wired",
        "eth0 is missing",
    )
    assert failed.value.code == 100
    assert "netlink went away" in failed.value.details
    assert [r.command for r in handler.asked] == [ADD, CHECK, DEL]
    assert handler.asked[0] == request(ADD)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO][-1:] == [
        "CNI request refused"
    ]


def test_requests_are_served_concurrently(server: CniServer, handler: Handler) -> None:
    handler.release.clear()
    slow = threading.Thread(target=ask, args=(server.path, request(ADD)), kwargs={"timeout": 10})
    slow.start()
    try:
        # While an ADD waits, another request is answered.
        with pytest.raises(CniError):
            ask(server.path, request(CHECK), timeout=5)
    finally:
        handler.release.set()
        slow.join()


def test_an_unreadable_request_is_answered_with_an_error(server: CniServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(5)
        connection.connect(server.path)
        connection.sendall(b'{"command": "ADD"}\n')
        reply = connection.recv(4096)

    assert reply.startswith(b'{"ok": false, "code": 100')


def test_a_stale_socket_file_is_replaced(directory: str, handler: Handler) -> None:
    path = f"{directory}/agent.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()

    server = CniServer(path=path, handler=handler)
    server.start()
    try:
        assert ask(path, request(ADD), timeout=5) == WIRED
    finally:
        server.close()
    assert not os.path.exists(path)


def test_a_live_agents_socket_is_not_taken(server: CniServer, handler: Handler) -> None:
    with pytest.raises(SocketInUseError, match="another process serves"):
        CniServer(path=server.path, handler=handler).start()

    assert ask(server.path, request(ADD), timeout=5) == WIRED


def test_a_file_that_is_not_a_socket_is_left_alone(directory: str, handler: Handler) -> None:
    path = f"{directory}/agent.sock"
    with open(path, "w") as file:
        file.write("precious")

    with pytest.raises(SocketInUseError, match="is not a socket"):
        CniServer(path=path, handler=handler).start()

    with open(path) as file:
        assert file.read() == "precious"
