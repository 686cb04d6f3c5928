"""uvicorn's HTTP/1.1 protocol (httptools), with a response's writes sent as one.

uvicorn writes a response's status line and headers, then its body, each straight to the
socket: two send calls per response, and with Nagle's algorithm off two segments, so
the client is woken twice. Here the writes made while a response is being produced are
gathered and sent once: when the response is complete, or at the end of the event
loop's turn for anything else (a response streamed in parts, uvicorn's own error
answers). What is sent, and in what order, is unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class GatheringTransport(asyncio.Transport):
    """The connection's transport, as uvicorn's protocol uses it, with writes gathered."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


class GatheringProtocol(HttpToolsProtocol):
    """Pass as uvicorn's `http`: HttpToolsProtocol on a `GatheringTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(GatheringTransport(transport, self.loop))

    def on_response_complete(self) -> None:
        # The response's last write is in: out it goes, without waiting for the turn's end.
        assert isinstance(self.transport, GatheringTransport)
        self.transport.flush()
        super().on_response_complete()
