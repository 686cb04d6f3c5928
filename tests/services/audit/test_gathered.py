"""A response's writes leave as one: at its end, or at the end of the loop's turn; what
is sent, and in what order, is what uvicorn wrote."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from services.audit.gathered import GatheringProtocol, GatheringTransport
from tests.runtime.fleet import free_port


class Recorded(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.sent.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_writes_of_one_turn_go_out_as_one() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], list[bytes], bool]:
        below = Recorded()
        gathering = GatheringTransport(below, asyncio.get_running_loop())
        gathering.write(b"HTTP/1.1 200 OK\r\n\r\n")
        gathering.write(b"body")
        held = list(below.sent)
        await asyncio.sleep(0)  # the turn ends
        after_turn = list(below.sent)
        gathering.write(b"last")
        gathering.close()  # sends what is pending first
        return held, after_turn, below.sent, below.closed

    held, after_turn, sent, closed = asyncio.run(scenario())
    assert held == []
    assert after_turn == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    assert sent == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"last"]
    assert closed


async def streamed(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    if scope["path"] == "/parts":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"a", b"b", b"c"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = scope["path"].encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def server() -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(
        streamed, port=port, http=GatheringProtocol, log_config=None, lifespan="off"
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run)
    thread.start()
    try:
        while not running.started:
            thread.join(0.05)
        yield port
    finally:
        running.should_exit = True
        thread.join()


def read_response(connection: socket.socket, buffer: bytearray) -> bytes:
    """One response (content-length or chunked) off the connection."""
    while True:
        head, found, rest = bytes(buffer).partition(b"\r\n\r\n")
        if found:
            if b"content-length: " in head:
                length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    del buffer[: len(head) + 4 + length]
                    return rest[:length]
            elif rest.endswith(b"0\r\n\r\n"):
                del buffer[:]
                return rest
        chunk = connection.recv(65536)
        assert chunk, "the server closed the connection"
        buffer += chunk


def test_responses_on_one_connection_arrive_whole_and_in_order(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=10) as connection:
        buffer = bytearray()
        for path in ("/one", "/parts", "/two"):
            connection.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            body = read_response(connection, buffer)
            if path == "/parts":
                assert body == b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n"
            else:
                assert body == path.encode()
        # Pipelined: both answered, in order.
        connection.sendall(
            b"GET /three HTTP/1.1\r\nHost: x\r\n\r\nGET /four HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert read_response(connection, buffer) == b"/three"
        assert read_response(connection, buffer) == b"/four"
