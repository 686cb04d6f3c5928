"""The CNI 1.0.0 contract as the plugin sees it: parameters, configuration, results, errors.

Standard library only (see the package's docstring), and no dataclasses: their import
alone (inspect, ast) would double the plugin's start-up. Every failure is a `CniError`
carrying the spec's code; the plugin prints it as the spec's error object.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

VERSION = "1.0.0"
SUPPORTED_VERSIONS = (VERSION,)
DEFAULT_AGENT_SOCKET = "/run/knm/agent.sock"

# The spec's reserved codes (SPEC.md, section 5, "Error").
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
# knm's own, 100 and up.
AGENT_FAILED = 100
WIRING_DIFFERS = 101
SANDBOX_OCCUPIED = 102

ADD = "ADD"
DEL = "DEL"
CHECK = "CHECK"
VERSION_COMMAND = "VERSION"
# Commands of later spec versions (1.1.0); this plugin speaks 1.0.0, where they do not
# exist, so they are answered as an invalid CNI_COMMAND.
LATER_COMMANDS = ("GC", "STATUS")

_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_NETWORK_NAME = _CONTAINER_ID
_IFNAME_MAX = 15


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def document(self, *, cni_version: str) -> dict[str, Any]:
        return {
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        }


class PodRef(NamedTuple):
    """The pod as the runtime names it in CNI_ARGS (kubelet passes all three)."""

    uid: str | None
    namespace: str | None
    name: str | None

    @property
    def named(self) -> bool:
        return bool(self.uid) or bool(self.namespace and self.name)


class Invocation(NamedTuple):
    command: str
    container_id: str
    netns: str
    ifname: str
    pod: PodRef
    config: Mapping[str, Any]

    @property
    def cni_version(self) -> str:
        return str(self.config["cniVersion"])

    @property
    def agent_socket(self) -> str:
        return str(self.config.get("agentSocket") or DEFAULT_AGENT_SOCKET)


def command_of(environ: Mapping[str, str]) -> str:
    command = environ.get("CNI_COMMAND", "")
    if command in (ADD, DEL, CHECK, VERSION_COMMAND):
        return command
    if not command:
        raise CniError(INVALID_ENVIRONMENT, "CNI_COMMAND is not set")
    if command in LATER_COMMANDS:
        raise CniError(
            INVALID_ENVIRONMENT,
            f"CNI_COMMAND {command} is not supported",
            f"knm-cni implements CNI {VERSION}: ADD, DEL, CHECK and VERSION",
        )
    raise CniError(INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not a CNI command")


def decode_config(stdin: bytes) -> dict[str, Any]:
    try:
        document = json.loads(stdin)
    except (UnicodeDecodeError, ValueError) as error:
        raise CniError(
            DECODE_FAILURE, "the network configuration is not JSON", str(error)
        ) from None
    if not isinstance(document, dict):
        raise CniError(DECODE_FAILURE, "the network configuration is not a JSON object")
    return document


def version_of(document: Mapping[str, Any]) -> str | None:
    """The configuration's cniVersion, when it is a string (errors echo it back)."""
    version = document.get("cniVersion")
    return version if isinstance(version, str) else None


def validate_config(document: Mapping[str, Any]) -> None:
    version = document.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniError(INVALID_CONFIG, "cniVersion is missing from the network configuration")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"CNI version {version} is not supported",
            f"knm-cni supports {', '.join(SUPPORTED_VERSIONS)}",
        )
    name = document.get("name")
    if not isinstance(name, str) or not _NETWORK_NAME.match(name):
        raise CniError(
            INVALID_CONFIG,
            "the network's name is missing or invalid",
            "a name starts with a letter or digit, then letters, digits, '_', '.' or '-'",
        )
    kind = document.get("type")
    if not isinstance(kind, str) or not kind or "/" in kind:
        raise CniError(INVALID_CONFIG, "the plugin's type is missing or invalid")
    socket = document.get("agentSocket")
    if socket is not None and (not isinstance(socket, str) or not os.path.isabs(socket)):
        raise CniError(INVALID_CONFIG, "agentSocket must be an absolute path")
    previous = document.get("prevResult")
    if previous is not None and not isinstance(previous, dict):
        raise CniError(INVALID_CONFIG, "prevResult must be a result object")


def parse_args(value: str) -> dict[str, str]:
    """CNI_ARGS: `KEY=VALUE` pairs separated by semicolons."""
    pairs: dict[str, str] = {}
    for pair in value.split(";"):
        if not pair:
            continue
        key, sep, item = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS holds an invalid pair {pair!r}")
        pairs[key] = item
    return pairs


def invocation(environ: Mapping[str, str], *, config: Mapping[str, Any]) -> Invocation:
    """An ADD, CHECK or DEL's parameters, validated as the spec requires."""
    command = command_of(environ)
    container_id = environ.get("CNI_CONTAINERID", "")
    if not _CONTAINER_ID.match(container_id):
        raise CniError(
            INVALID_ENVIRONMENT,
            "CNI_CONTAINERID is missing or invalid",
            "it starts with a letter or digit, then letters, digits, '_', '.' or '-'",
        )
    netns = environ.get("CNI_NETNS", "")
    if command != DEL and not netns:
        raise CniError(INVALID_ENVIRONMENT, "CNI_NETNS is not set")
    ifname = environ.get("CNI_IFNAME", "")
    if not valid_ifname(ifname):
        raise CniError(
            INVALID_ENVIRONMENT,
            "CNI_IFNAME is missing or invalid",
            f"an interface name has 1 to {_IFNAME_MAX} characters, none of '/', ':' or spaces",
        )
    args = parse_args(environ.get("CNI_ARGS", ""))
    pod = PodRef(
        uid=args.get("K8S_POD_UID") or None,
        namespace=args.get("K8S_POD_NAMESPACE") or None,
        name=args.get("K8S_POD_NAME") or None,
    )
    if command != DEL and not pod.named:
        raise CniError(
            INVALID_ENVIRONMENT,
            "CNI_ARGS does not name the pod",
            "knm needs K8S_POD_UID, or K8S_POD_NAMESPACE and K8S_POD_NAME",
        )
    return Invocation(
        command=command,
        container_id=container_id,
        netns=netns,
        ifname=ifname,
        pod=pod,
        config=config,
    )


def valid_ifname(name: str) -> bool:
    if not name or len(name) > _IFNAME_MAX or name in (".", ".."):
        return False
    return not any(c in "/:" or c.isspace() for c in name)


def add_result(
    *, cni_version: str, host_ifname: str, ifname: str, mac: str, netns: str, ip: str, gateway: str
) -> dict[str, Any]:
    """The result of an ADD: the pod's interface, its /32 and the default route."""
    return {
        "cniVersion": cni_version,
        "interfaces": [
            {"name": host_ifname},
            {"name": ifname, "mac": mac, "sandbox": netns},
        ],
        "ips": [{"address": f"{ip}/32", "gateway": gateway, "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": gateway}],
        "dns": {},
    }


def version_result(cni_version: str) -> dict[str, Any]:
    return {"cniVersion": cni_version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def previous_addresses(config: Mapping[str, Any]) -> set[str] | None:
    """The addresses a CHECK's prevResult lists; None without a prevResult."""
    previous = config.get("prevResult")
    if not isinstance(previous, dict):
        return None
    ips = previous.get("ips")
    if not isinstance(ips, list):
        return set()
    return {str(ip.get("address")) for ip in ips if isinstance(ip, dict)}
