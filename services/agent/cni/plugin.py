"""`knm-cni`: the CNI 1.0.0 plugin the runtime executes for every pod sandbox.

It validates what the runtime passed, asks the node's knm agent (over its unix socket,
`agentSocket` in the network configuration) to wire, check or unwire the pod, and
prints the spec's result or error object. The agent does the wiring: it knows the pod's
address from the allocator, and it owns the node's links.

Commands: ADD, DEL, CHECK and VERSION. GC and STATUS belong to CNI 1.1.0; to this 1.0.0
plugin they are an invalid CNI_COMMAND (code 4). DEL succeeds when the pod is already
unwired. Standard library only, so that it starts fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from services.agent.cni.protocol import Request, ask
from services.agent.cni.spec import (
    ADD,
    CHECK,
    DEL,
    INVALID_ENVIRONMENT,
    IO_FAILURE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    VERSION,
    VERSION_COMMAND,
    WIRING_DIFFERS,
    CniError,
    Invocation,
    add_result,
    command_of,
    decode_config,
    invocation,
    previous_addresses,
    validate_config,
    version_of,
    version_result,
)

# The agent waits (about 10 s) for the allocator's word on a new pod; wiring then takes
# milliseconds. Beyond this the agent is stuck, and the runtime retries.
AGENT_TIMEOUT = 60.0


def run(environ: Mapping[str, str], stdin: bytes) -> tuple[int, dict[str, Any] | None]:
    """The exit code and the JSON object to print (None: print nothing)."""
    version = VERSION
    try:
        command = command_of(environ)
        if command == VERSION_COMMAND:
            # The input holds only cniVersion; runtimes have sent nothing at all.
            document = decode_config(stdin) if stdin.strip() else {}
            return 0, version_result(version_of(document) or VERSION)
        document = decode_config(stdin)
        version = version_of(document) or VERSION
        validate_config(document)
        return 0, execute(invocation(environ, config=document))
    except CniError as error:
        return 1, error.document(cni_version=version)


def execute(call: Invocation) -> dict[str, Any] | None:
    if call.command == ADD and not os.path.exists(call.netns):
        raise CniError(INVALID_ENVIRONMENT, "CNI_NETNS does not exist", call.netns)
    if call.command == CHECK and not os.path.exists(call.netns):
        raise CniError(UNKNOWN_CONTAINER, "the container's network namespace is gone", call.netns)
    request = Request(
        command=call.command,
        container_id=call.container_id,
        netns=call.netns,
        ifname=call.ifname,
        pod=call.pod,
    )
    attachment = ask(call.agent_socket, request, timeout=AGENT_TIMEOUT)
    if call.command == DEL:
        return None
    if attachment is None:
        raise CniError(TRY_AGAIN_LATER, "the knm agent returned no interface for the pod")
    if call.command == CHECK:
        expected = previous_addresses(call.config)
        if expected is not None and f"{attachment.ip}/32" not in expected:
            raise CniError(
                WIRING_DIFFERS,
                "the pod's address is not the one of its last ADD",
                f"prevResult lists {sorted(expected)}, the pod has {attachment.ip}/32",
            )
        return None
    return add_result(
        cni_version=call.cni_version,
        host_ifname=attachment.host_ifname,
        ifname=call.ifname,
        mac=attachment.mac,
        netns=call.netns,
        ip=attachment.ip,
        gateway=attachment.gateway,
    )


def main() -> None:
    document: dict[str, Any] | None
    try:
        stdin = sys.stdin.buffer.read()
    except OSError as error:
        failure = CniError(IO_FAILURE, "reading the network configuration failed", str(error))
        code, document = 1, failure.document(cni_version=VERSION)
    else:
        code, document = run(os.environ, stdin)
    if document is not None:
        sys.stdout.write(json.dumps(document) + "\n")
        sys.stdout.flush()
    sys.exit(code)
