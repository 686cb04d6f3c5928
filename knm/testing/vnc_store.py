"""The VNC test server's object store and the real server's rules over it.

What is enforced, as the real API server does: an fq_name is unique per type (409); a
parent of an allowed type must exist (404 otherwise) and its fq_name is the object's
prefix; referenced objects must exist (404); a delete is refused (409) while the object
has children or anything refers to it; uuids are assigned unless given (a given one
already used: 409); properties whose operations exclude U cannot change on update.
"""

from __future__ import annotations

import copy
import threading
import uuid as uuidlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from knm.testing.vnc_schema import ResourceType, SchemaError, check_body, check_ref_attr
from knm.testing.vnc_schema import resource_type as lookup_type


class VncError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class StoredObject:
    type: str
    uuid: str
    fq_name: tuple[str, ...]
    parent_type: str | None
    parent_uuid: str | None
    props: dict[str, Any] = field(default_factory=dict)
    # field -> [{"to": [...], "uuid": ..., "attr": ...}]
    refs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _rtype(name: str) -> ResourceType:
    found = lookup_type(name)
    if found is None:
        raise VncError(404, f"unknown resource type {name!r}")
    return found


class VncStore:
    """Objects by uuid, with the indexes the rules need. Thread-safe: one lock."""

    def __init__(self, *, types: Iterable[str]) -> None:
        self.types = frozenset(types)
        self._lock = threading.RLock()
        self.objects: dict[str, StoredObject] = {}
        self._by_name: dict[tuple[str, tuple[str, ...]], str] = {}
        self._children: dict[str, set[str]] = defaultdict(set)
        # target uuid -> referring uuid -> how many references
        self._back: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    # ---- lookups -------------------------------------------------------------------------

    def uuid_of(self, type_name: str, fq_name: Iterable[str]) -> str:
        with self._lock:
            found = self._by_name.get((type_name, tuple(fq_name)))
            if found is None:
                raise VncError(404, f"{type_name} {':'.join(fq_name)} not found")
            return found

    def get(self, uuid: str, *, type_name: str | None = None) -> StoredObject:
        with self._lock:
            obj = self.objects.get(uuid)
            if obj is None or (type_name is not None and obj.type != type_name):
                raise VncError(404, f"{type_name or 'object'} {uuid} not found")
            return obj

    def children_of(self, uuid: str) -> list[StoredObject]:
        with self._lock:
            return [self.objects[c] for c in sorted(self._children.get(uuid, ()))]

    def referrers_of(self, uuid: str) -> list[StoredObject]:
        with self._lock:
            return [self.objects[r] for r in sorted(self._back.get(uuid, {}))]

    def of_type(self, type_name: str) -> list[StoredObject]:
        """The objects of one type, as they are (read them, do not change them)."""
        with self._lock:
            return [o for o in self.objects.values() if o.type == type_name]

    def snapshot(self) -> list[StoredObject]:
        """Deep copies of every object: what a test walks."""
        with self._lock:
            return [copy.deepcopy(obj) for obj in self.objects.values()]

    # ---- writes --------------------------------------------------------------------------

    def create(self, type_name: str, body: dict[str, Any]) -> StoredObject:
        rtype = self._supported(type_name)
        try:
            check_body(rtype, body)
        except SchemaError as error:
            raise VncError(400, str(error)) from None
        fq_name = body.get("fq_name")
        if (
            not isinstance(fq_name, list)
            or not fq_name
            or not all(isinstance(part, str) and part for part in fq_name)
        ):
            raise VncError(400, f"{type_name}: fq_name must be a list of non-empty strings")
        fq = tuple(fq_name)
        with self._lock:
            if (type_name, fq) in self._by_name:
                raise VncError(409, f"{type_name} {':'.join(fq)} already exists")
            parent_type, parent_uuid = self._parent(rtype, fq, body)
            given = body.get("uuid")
            uuid = str(given) if given else str(uuidlib.uuid4())
            if uuid in self.objects:
                raise VncError(409, f"uuid {uuid} is already in use")
            refs = {
                f: self._resolve_refs(rtype, f, body[f])
                for f in rtype.ref_fields
                if body.get(f) is not None
            }
            props = {
                k: copy.deepcopy(v)
                for k, v in body.items()
                if k in rtype.prop_fields and v is not None
            }
            obj = StoredObject(
                type=type_name,
                uuid=uuid,
                fq_name=fq,
                parent_type=parent_type,
                parent_uuid=parent_uuid,
                props=props,
                refs={f: r for f, r in refs.items() if r},
            )
            self.objects[uuid] = obj
            self._by_name[(type_name, fq)] = uuid
            if parent_uuid is not None:
                self._children[parent_uuid].add(uuid)
            self._index_refs(obj, +1)
            return obj

    def update(self, type_name: str, uuid: str, body: dict[str, Any]) -> StoredObject:
        rtype = self._supported(type_name)
        try:
            check_body(rtype, body)
        except SchemaError as error:
            raise VncError(400, str(error)) from None
        with self._lock:
            obj = self.get(uuid, type_name=type_name)
            if "fq_name" in body and tuple(body["fq_name"]) != obj.fq_name:
                raise VncError(400, f"{type_name} {uuid}: fq_name cannot change")
            for key, value in body.items():
                if key not in rtype.prop_fields:
                    continue
                if "U" not in rtype.prop_operations(key) and value != obj.props.get(key):
                    raise VncError(400, f"{type_name}.{key} cannot be updated")
            refs = {
                f: self._resolve_refs(rtype, f, body[f] or [])
                for f in rtype.ref_fields
                if f in body
            }
            for key, value in body.items():
                if key in rtype.prop_fields:
                    if value is None:
                        obj.props.pop(key, None)
                    else:
                        obj.props[key] = copy.deepcopy(value)
            self._index_refs(obj, -1)
            for f, resolved in refs.items():
                if resolved:
                    obj.refs[f] = resolved
                else:
                    obj.refs.pop(f, None)
            self._index_refs(obj, +1)
            return obj

    def delete(self, type_name: str, uuid: str) -> None:
        with self._lock:
            obj = self.get(uuid, type_name=type_name)
            children = self._children.get(uuid)
            if children:
                kinds = sorted({self.objects[c].type for c in children})
                raise VncError(409, f"delete of {uuid} refused: it has children {kinds}")
            referrers = self._back.get(uuid)
            if referrers:
                kinds = sorted({self.objects[r].type for r in referrers})
                raise VncError(409, f"delete of {uuid} refused: back-references from {kinds}")
            self._index_refs(obj, -1)
            del self.objects[uuid]
            del self._by_name[(obj.type, obj.fq_name)]
            if obj.parent_uuid is not None:
                self._children[obj.parent_uuid].discard(uuid)
                if not self._children[obj.parent_uuid]:
                    del self._children[obj.parent_uuid]

    def ref_update(self, body: dict[str, Any]) -> str:
        type_name = body.get("type")
        uuid = body.get("uuid")
        ref_type = body.get("ref-type")
        operation = body.get("operation")
        if not isinstance(type_name, str) or not isinstance(uuid, str):
            raise VncError(400, "ref-update needs type and uuid")
        if not isinstance(ref_type, str) or operation not in ("ADD", "DELETE"):
            raise VncError(400, "ref-update needs ref-type and operation ADD or DELETE")
        rtype = self._supported(type_name)
        field_name = rtype.ref_field_for(ref_type)
        if field_name is None:
            raise VncError(400, f"{type_name} has no reference to {ref_type}")
        attr = body.get("attr")
        try:
            check_ref_attr(rtype, field_name, attr)
        except SchemaError as error:
            raise VncError(400, str(error)) from None
        with self._lock:
            obj = self.get(uuid, type_name=type_name)
            ref_uuid = body.get("ref-uuid")
            ref_fq = body.get("ref-fq-name")
            if ref_uuid:
                target = self.get(str(ref_uuid), type_name=ref_type)
            elif ref_fq:
                target = self.get(self.uuid_of(ref_type, ref_fq))
            else:
                raise VncError(400, "ref-update needs ref-uuid or ref-fq-name")
            self._index_refs(obj, -1)
            kept = [r for r in obj.refs.get(field_name, []) if r["uuid"] != target.uuid]
            if operation == "ADD":
                kept.append({"to": list(target.fq_name), "uuid": target.uuid, "attr": attr})
            if kept:
                obj.refs[field_name] = kept
            else:
                obj.refs.pop(field_name, None)
            self._index_refs(obj, +1)
            return obj.uuid

    def seed(self, type_name: str, fq_name: tuple[str, ...], **props: Any) -> StoredObject:
        """An object the real server has before anyone writes (defaults)."""
        rtype = self._supported(type_name)
        body: dict[str, Any] = {"fq_name": list(fq_name), **props}
        if rtype.parent_types != ["config-root"]:
            body["parent_type"] = rtype.parent_types[0]
        return self.create(type_name, body)

    # ---- internals -----------------------------------------------------------------------

    def _supported(self, type_name: str) -> ResourceType:
        if type_name not in self.types:
            raise VncError(404, f"this test server does not serve {type_name!r}")
        return _rtype(type_name)

    def _parent(
        self, rtype: ResourceType, fq: tuple[str, ...], body: dict[str, Any]
    ) -> tuple[str | None, str | None]:
        if rtype.parent_types == ["config-root"]:
            if len(fq) != 1:
                raise VncError(400, f"{rtype.name} has no parent: its fq_name has one part")
            return None, None
        parent_type = body.get("parent_type")
        if parent_type is None and len(rtype.parent_types) == 1:
            parent_type = rtype.parent_types[0]
        if parent_type not in rtype.parent_types:
            raise VncError(400, f"{rtype.name}: parent_type must be one of {rtype.parent_types}")
        if len(fq) < 2:
            raise VncError(400, f"{rtype.name}: fq_name must name the parent")
        parent_uuid = self._by_name.get((str(parent_type), fq[:-1]))
        if parent_uuid is None:
            raise VncError(404, f"parent {parent_type} {':'.join(fq[:-1])} not found")
        given = body.get("parent_uuid")
        if given and given != parent_uuid:
            raise VncError(400, f"{rtype.name}: parent_uuid does not match the fq_name")
        return str(parent_type), parent_uuid

    def _resolve_refs(
        self, rtype: ResourceType, field_name: str, refs: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        target_type = rtype.ref_target(field_name)
        resolved: dict[str, dict[str, Any]] = {}
        for ref in refs:
            if ref.get("uuid"):
                target = self.get(str(ref["uuid"]), type_name=target_type)
            else:
                target = self.get(self.uuid_of(target_type, ref["to"]))
            resolved[target.uuid] = {
                "to": list(target.fq_name),
                "uuid": target.uuid,
                "attr": copy.deepcopy(ref.get("attr")),
            }
        return list(resolved.values())

    def _index_refs(self, obj: StoredObject, delta: int) -> None:
        for refs in obj.refs.values():
            for ref in refs:
                back = self._back[ref["uuid"]]
                back[obj.uuid] += delta
                if back[obj.uuid] <= 0:
                    del back[obj.uuid]
                if not back:
                    del self._back[ref["uuid"]]
