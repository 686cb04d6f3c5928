"""One level-triggered pass: list what is in Contrail, diff it with the desired objects,
write the difference.

Order: creates and updates follow `TYPE_ORDER` (parents and referenced objects first);
references an update drops are dropped before anything is deleted; orphans (objects with
knm's annotations that the model no longer asks for) are deleted in the reverse order,
children and referring objects before what they point to. Objects without knm's
annotations are never written; a project someone else made is used as a parent as it is.

Differences are judged on what knm sets: a property or a reference's attribute is in
sync when every value knm gives it is there, so what the server fills in itself (a
subnet's gateway and uuid, ids, permissions) never reads as drift. A property the schema
does not let an update change (an instance IP's address) is changed by replacing the
object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from services.applier.contrail.client import VncClient
from services.applier.contrail.objects import (
    MANAGED_PROPS,
    MANAGED_REFS,
    TYPE_ORDER,
    DesiredObjects,
    Owner,
)

log = logging.getLogger("knm.applier.contrail")


@dataclass(frozen=True, slots=True)
class Write:
    """One call a reconcile makes (or, dry, would make)."""

    operation: str  # create | update | ref-add | ref-delete | delete | replace
    type: str
    fq_name: tuple[str, ...]
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.operation:<10} {self.type} {':'.join(self.fq_name)}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(slots=True)
class Report:
    writes: list[Write] = field(default_factory=list)
    # Objects knm wants whose name someone else's object holds: left alone.
    foreign: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    refused_deletes: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    listed: int = 0


def canonical(value: Any) -> Any:
    """A library value (types of `resource_xsd`, lists, scalars) as plain data."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    return {k: canonical(v) for k, v in vars(value).items()}


def covers(desired: Any, actual: Any) -> bool:
    """Whether `actual` holds every value `desired` sets (None and [] set nothing)."""
    if desired is None or desired == []:
        return True
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return False
        return all(covers(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return False
        return all(covers(d, a) for d, a in zip(desired, actual, strict=True))
    return bool(desired == actual)


def _fq(obj: Any) -> tuple[str, ...]:
    return tuple(obj.get_fq_name())


def _get(obj: Any, name: str) -> Any:
    return getattr(obj, f"get_{name}")()


class Reconciler:
    def __init__(self, *, client: VncClient, owner: Owner) -> None:
        self._client = client
        self._owner = owner

    def reconcile(self, desired: DesiredObjects, *, dry_run: bool = False) -> Report:
        report = Report()
        actual: dict[tuple[str, tuple[str, ...]], Any] = {}
        for type_name in TYPE_ORDER:
            for obj in self._client.list(type_name):
                actual[(type_name, _fq(obj))] = obj
        report.listed = len(actual)

        def write(w: Write, call: Callable[[], object]) -> None:
            report.writes.append(w)
            if not dry_run:
                call()

        for type_name in TYPE_ORDER:
            for want in desired.of_type(type_name):
                fq = _fq(want)
                have = actual.get((type_name, fq))
                if have is None:
                    write(Write("create", type_name, fq), partial(self._create, want, report))
                    continue
                if not self._owner.owns(have.get_annotations()):
                    if type_name != "project":
                        report.foreign.append((type_name, fq))
                        log.warning(
                            "not knm's: %s %s is in the way; left alone", type_name, ":".join(fq)
                        )
                    continue
                self._converge(want, have, write)

        for type_name in reversed(TYPE_ORDER):
            for (kind, fq), have in sorted(actual.items()):
                if kind != type_name or desired.get(kind, fq) is not None:
                    continue
                if not self._owner.owns(have.get_annotations()):
                    continue
                write(
                    Write("delete", kind, fq, "orphan"),
                    partial(self._delete, kind, have, fq, report),
                )
        return report

    def _create(self, want: Any, report: Report) -> None:
        existing = self._client.create(want)
        if existing is None:
            return
        # Its name was taken: an earlier attempt of ours whose answer was lost, or
        # someone else's object.
        if self._owner.owns(existing.get_annotations()):

            def write(w: Write, call: Callable[[], object]) -> None:
                report.writes.append(w)
                call()

            self._converge(want, existing, write)
        elif want.get_type() != "project":
            report.foreign.append((want.get_type(), _fq(want)))

    def _delete(self, kind: str, have: Any, fq: tuple[str, ...], report: Report) -> None:
        if not self._client.delete(kind, have.uuid):
            report.refused_deletes.append((kind, fq))

    def _converge(
        self, want: Any, have: Any, write: Callable[[Write, Callable[[], object]], None]
    ) -> None:
        type_name = want.get_type()
        fq = _fq(want)
        changed = [
            name
            for name in MANAGED_PROPS[type_name]
            if not covers(canonical(_get(want, name)), canonical(_get(have, name)))
        ]
        fixed = [n for n in changed if "U" not in type(want).prop_field_types[n]["operations"]]
        if fixed:
            # The schema refuses these on update: the object is made again.
            def replace() -> None:
                if self._client.delete(type_name, have.uuid):
                    self._client.create(want)

            write(Write("replace", type_name, fq, ",".join(fixed)), replace)
            return
        if changed:
            patch = type(want).from_dict(uuid=have.uuid, fq_name=list(fq), **_parent_of(have))
            patch.clear_pending_updates()
            for name in changed:
                getattr(patch, f"set_{name}")(_get(want, name))
            write(
                Write("update", type_name, fq, ",".join(changed)),
                lambda: self._client.update(patch),
            )
        for ref_field in MANAGED_REFS[type_name]:
            target_type = type(want).ref_field_types[ref_field][0]
            wanted = {tuple(r["to"]): r.get("attr") for r in _get(want, ref_field) or []}
            present = {tuple(r["to"]): r.get("attr") for r in _get(have, ref_field) or []}
            for to, attr in sorted(wanted.items()):
                if to in present and covers(canonical(attr), canonical(present[to])):
                    continue
                write(
                    Write("ref-add", type_name, fq, f"{target_type} {':'.join(to)}"),
                    partial(
                        self._client.ref_update, type_name, have.uuid, target_type, to, "ADD", attr
                    ),
                )
            for to in sorted(present.keys() - wanted.keys()):
                write(
                    Write("ref-delete", type_name, fq, f"{target_type} {':'.join(to)}"),
                    partial(
                        self._client.ref_update, type_name, have.uuid, target_type, to, "DELETE"
                    ),
                )


def _parent_of(obj: Any) -> dict[str, Any]:
    parent_type = getattr(obj, "parent_type", None)
    return {"parent_type": parent_type} if parent_type else {}
