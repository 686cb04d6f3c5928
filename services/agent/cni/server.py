"""The agent's end of `knm-cni`: a unix socket serving one request per connection.

Each connection gets a thread (an ADD may wait seconds for the allocator's word on its
pod while others proceed). The socket file is the agent's alone (mode 0600: the runtime
runs as root); a file left by an agent that died is replaced, a live agent's is not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import stat
import threading
from typing import Protocol

from services.agent.cni.protocol import (
    Attachment,
    ProtocolError,
    Request,
    decode_request,
    encode_reply,
    read_line,
)
from services.agent.cni.spec import ADD, AGENT_FAILED, CHECK, CniError

log = logging.getLogger("knm.agent.cni")

# A plugin writes its request at once; a connection silent this long is not a plugin.
READ_TIMEOUT = 5.0


class CniHandler(Protocol):
    def cni_add(self, request: Request) -> Attachment: ...

    def cni_check(self, request: Request) -> Attachment: ...

    def cni_del(self, request: Request) -> None: ...


class SocketInUseError(Exception):
    """Another process serves the socket path."""


class CniServer:
    """Serves `handler` on the unix socket at `path` from `start()` until `close()`."""

    def __init__(self, *, path: str, handler: CniHandler) -> None:
        self.path = path
        self._handler = handler
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._server is not None:
            return
        _clear_stale(self.path)
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        server = _Server(self.path, _Connection)
        os.chmod(self.path, stat.S_IRUSR | stat.S_IWUSR)
        server.handler = self._handler
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="cni", daemon=True
        )
        self._thread.start()
        log.info("serving CNI", extra={"socket": self.path})

    def close(self) -> None:
        """Stop accepting, finish the requests in hand, remove the socket file."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        log.info("CNI socket closed", extra={"socket": self.path})


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # server_close() waits for the requests in hand: none outlives the agent's close.
    block_on_close = True
    handler: CniHandler


class _Connection(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        connection: socket.socket = self.request
        connection.settimeout(READ_TIMEOUT)
        try:
            request = decode_request(read_line(connection))
        except (ProtocolError, OSError) as error:
            log.warning("unreadable CNI request", extra={"error": str(error)})
            reply = encode_reply(CniError(AGENT_FAILED, "unreadable request", str(error)))
        else:
            reply = encode_reply(self._answer(request))
        with contextlib.suppress(OSError):
            connection.sendall(reply)

    def _answer(self, request: Request) -> Attachment | CniError | None:
        handler = self.server.handler
        try:
            if request.command == ADD:
                return handler.cni_add(request)
            if request.command == CHECK:
                return handler.cni_check(request)
            handler.cni_del(request)
            return None
        except CniError as error:
            log.info(
                "CNI request refused",
                extra={
                    "pod": request.pod_key,
                    "command": request.command,
                    "code": error.code,
                    "reason": error.msg,
                },
            )
            return error
        except Exception as error:
            log.exception(
                "CNI request failed", extra={"pod": request.pod_key, "command": request.command}
            )
            return CniError(AGENT_FAILED, f"{request.command} failed in the agent", str(error))


def _clear_stale(path: str) -> None:
    """Remove a socket file no process listens on; refuse to take a live one."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketInUseError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            log.info("stale CNI socket removed", extra={"socket": path})
            return
    raise SocketInUseError(f"another process serves {path}")
