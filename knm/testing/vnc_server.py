"""A VNC config API test server: the REST API of Contrail's API server for the object
types knm uses, over `VncStore` (which enforces the real server's rules).

It is a test server: no Contrail controller can run on these machines, so knm's Contrail
backend is tested against this, and `knm contrail test-server` serves it for trying
`knm contrail sync` by hand. It can fail a share of calls (`fail_rate`): a 500 or 503
before doing anything, or a dropped connection before or after doing the work, as a
real server behind a flaky network would.

Served: `GET /` (the home page with the links the client library reads),
`POST /<type>s`, `GET /<type>s` (`detail`, `parent_id`, `parent_fq_name_str`,
`obj_uuids`, `back_ref_id`, `fields`, `count`), `GET|PUT|DELETE /<type>/<uuid>`,
`POST /fqname-to-id`, `POST /id-to-fqname`, `POST /ref-update`,
`POST /list-bulk-collection`.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from knm.core.contrail import IPAM_FQ_NAME
from knm.testing.http import JsonHandler, ServedOnAThread
from knm.testing.vnc_store import StoredObject, VncError, VncStore

# What knm writes, and the parents it needs.
TYPES = (
    "domain",
    "project",
    "network-ipam",
    "virtual-network",
    "network-policy",
    "floating-ip-pool",
    "floating-ip",
    "instance-ip",
    "virtual-machine",
    "virtual-machine-interface",
)
WRITES = frozenset({"create", "update", "delete", "ref-update"})


def _plural(type_name: str) -> str:
    return f"{type_name}s"


class VncTestServer(ServedOnAThread):
    thread_name = "vnc-test-server"

    """Serve a fresh store (with Contrail's default domain, project and IPAM) on
    `host:port` (0: any free port) in a thread."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fail_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.store = VncStore(types=TYPES)
        self.store.seed("domain", ("default-domain",))
        self.store.seed("project", ("default-domain", "default-project"))
        self.store.seed("network-ipam", IPAM_FQ_NAME)
        self.fail_rate = fail_rate
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        # Calls answered, by kind (create, read, list, update, delete, ref-update, ...).
        self.calls: Counter[str] = Counter()
        self.failures_injected = 0
        self._calls_lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True

    @property
    def writes(self) -> int:
        with self._calls_lock:
            return sum(n for kind, n in self.calls.items() if kind in WRITES)

    def reset_counts(self) -> None:
        with self._calls_lock:
            self.calls.clear()

    # ---- faults --------------------------------------------------------------------------

    def _fault(self) -> str | None:
        if self.fail_rate <= 0:
            return None
        with self._random_lock:
            if self._random.random() >= self.fail_rate:
                return None
            fault = self._random.choice(("500", "503", "drop-before", "drop-after"))
        with self._calls_lock:
            self.failures_injected += 1
        return fault

    def _count(self, kind: str) -> None:
        with self._calls_lock:
            self.calls[kind] += 1

    # ---- the API -------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[str, Any]:
        """(kind of call, JSON answer); raises VncError."""
        parts = [p for p in path.split("/") if p]
        if method == "GET" and not parts:
            return "home", self._home()
        if method == "POST" and parts == ["fqname-to-id"]:
            uuid = self.store.uuid_of(_str(body, "type"), _list(body, "fq_name"))
            return "fqname-to-id", {"uuid": uuid}
        if method == "POST" and parts == ["id-to-fqname"]:
            obj = self.store.get(_str(body, "uuid"))
            return "id-to-fqname", {"type": obj.type, "fq_name": list(obj.fq_name)}
        if method == "POST" and parts == ["ref-update"]:
            return "ref-update", {"uuid": self.store.ref_update(_dict(body))}
        if method == "POST" and parts == ["list-bulk-collection"]:
            request = _dict(body)
            params = {k: _query_value(v) for k, v in request.items() if k != "type"}
            return "list", self._list(_str(request, "type"), params)
        if len(parts) == 1 and parts[0].endswith("s") and parts[0][:-1] in TYPES:
            type_name = parts[0][:-1]
            if method == "GET":
                return "list", self._list(type_name, query)
            if method == "POST":
                obj = self.store.create(type_name, _resource_body(body, type_name))
                return "create", {type_name: self._summary(obj)}
        if len(parts) == 2 and parts[0] in TYPES:
            type_name, uuid = parts
            if method == "GET":
                obj = self.store.get(uuid, type_name=type_name)
                return "read", {type_name: self._render(obj, query)}
            if method == "PUT":
                obj = self.store.update(type_name, uuid, _resource_body(body, type_name))
                return "update", {type_name: self._summary(obj)}
            if method == "DELETE":
                self.store.delete(type_name, uuid)
                return "delete", None
        raise VncError(404, f"{method} {path}: not served by the VNC test server")

    def _home(self) -> dict[str, Any]:
        root = self.url
        links: list[dict[str, Any]] = []
        for type_name in TYPES:
            links.append(
                {
                    "link": {
                        "rel": "collection",
                        "href": f"{root}/{_plural(type_name)}",
                        "name": type_name,
                    }
                }
            )
            links.append(
                {"link": {"rel": "resource-base", "href": f"{root}/{type_name}", "name": type_name}}
            )
        for action, path in (
            ("name-to-id", "fqname-to-id"),
            ("id-to-name", "id-to-fqname"),
            ("ref-update", "ref-update"),
            ("list-bulk-collection", "list-bulk-collection"),
        ):
            links.append({"link": {"rel": "action", "href": f"{root}/{path}", "name": action}})
        return {"href": root, "links": links}

    def _summary(self, obj: StoredObject) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "uuid": obj.uuid,
            "fq_name": list(obj.fq_name),
            "name": obj.fq_name[-1],
            "href": f"{self.url}/{obj.type}/{obj.uuid}",
        }
        if obj.parent_type is not None:
            summary["parent_type"] = obj.parent_type
            summary["parent_uuid"] = obj.parent_uuid
        return summary

    def _render(self, obj: StoredObject, query: dict[str, str]) -> dict[str, Any]:
        fields = {f for f in query.get("fields", "").split(",") if f}
        rendered = self._summary(obj)
        rendered.update(json.loads(json.dumps(obj.props)))
        for name, refs in obj.refs.items():
            rendered[name] = [
                {
                    "to": r["to"],
                    "uuid": r["uuid"],
                    "attr": r["attr"],
                    "href": f"{self.url}/{obj.type}/{r['uuid']}",
                }
                for r in refs
            ]
        related = (
            ("exclude_children", "s", self.store.children_of),
            ("exclude_back_refs", "_back_refs", self.store.referrers_of),
        )
        for excluded, suffix, found in related:
            if _true(query.get(excluded)) and not fields:
                continue
            for other in found(obj.uuid):
                key = f"{other.type.replace('-', '_')}{suffix}"
                if fields and key not in fields:
                    continue
                rendered.setdefault(key, []).append(
                    {
                        "to": list(other.fq_name),
                        "uuid": other.uuid,
                        "href": f"{self.url}/{other.type}/{other.uuid}",
                    }
                )
        return rendered

    def _list(self, type_name: str, query: dict[str, str]) -> dict[str, Any]:
        if type_name not in TYPES:
            raise VncError(404, f"this test server does not serve {type_name!r}")
        objects = self.store.of_type(type_name)
        if query.get("parent_id"):
            parents = set(query["parent_id"].split(","))
            objects = [o for o in objects if o.parent_uuid in parents]
        if query.get("parent_fq_name_str"):
            prefix = tuple(query["parent_fq_name_str"].split(":"))
            objects = [o for o in objects if o.fq_name[:-1] == prefix]
        if query.get("obj_uuids"):
            wanted = set(query["obj_uuids"].split(","))
            objects = [o for o in objects if o.uuid in wanted]
        if query.get("fq_names"):
            names = {tuple(n.split(":")) for n in query["fq_names"].split(",")}
            objects = [o for o in objects if o.fq_name in names]
        if query.get("back_ref_id"):
            targets = set(query["back_ref_id"].split(","))
            objects = [
                o
                for o in objects
                if any(r["uuid"] in targets for refs in o.refs.values() for r in refs)
            ]
        objects.sort(key=lambda o: o.uuid)
        key = _plural(type_name)
        if _true(query.get("count")):
            return {key: {"count": len(objects)}}
        if _true(query.get("detail")):
            detail_query = {"exclude_children": "true", "exclude_back_refs": "true"}
            if query.get("fields"):
                detail_query = {"fields": query["fields"]}
            return {key: [{type_name: self._render(o, detail_query)} for o in objects]}
        return {
            key: [
                {
                    "uuid": o.uuid,
                    "fq_name": list(o.fq_name),
                    "href": f"{self.url}/{type_name}/{o.uuid}",
                }
                for o in objects
            ]
        }


def _handler(server: VncTestServer) -> type[JsonHandler]:
    class Handler(JsonHandler):
        def serve(self, method: str) -> None:
            raw = self.body()
            fault = server._fault()
            if fault in ("500", "503"):
                self.answer(int(fault), f"injected failure {fault}")
                return
            if fault == "drop-before":
                self.close_connection = True
                return
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            try:
                body = json.loads(raw) if raw else None
                kind, answer = server.handle(method, split.path, query, body)
            except VncError as error:
                self.answer(error.status, error.message)
                return
            except json.JSONDecodeError as error:
                self.answer(400, f"body is not JSON: {error}")
                return
            server._count(kind)
            if fault == "drop-after":
                # Done, but the client never hears of it.
                self.close_connection = True
                return
            self.answer(200, answer)

    return Handler


def _true(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _dict(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise VncError(400, "the body must be a JSON object")
    return body


def _str(body: object, key: str) -> str:
    value = _dict(body).get(key)
    if not isinstance(value, str):
        raise VncError(400, f"{key} must be a string")
    return value


def _list(body: object, key: str) -> list[str]:
    value = _dict(body).get(key)
    if not isinstance(value, list):
        raise VncError(400, f"{key} must be a list")
    return [str(v) for v in value]


def _resource_body(body: object, type_name: str) -> dict[str, Any]:
    inner = _dict(body).get(type_name)
    if not isinstance(inner, dict):
        raise VncError(400, f"the body must be {{{type_name!r}: {{...}}}}")
    return inner
