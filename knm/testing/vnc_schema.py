"""Request bodies checked against the type definitions the official client library ships.

`contrail-api-client` generates, from Contrail's schema, a class per resource type
(`vnc_api.gen.resource_common`) listing its properties with their XSD types and
restrictions, its references with the type they point to and the type of their
attribute, and its parent types; and a class per complex type (`resource_xsd`) listing
its fields. The VNC test server validates every create, update and ref-update with them,
so a body the real server would refuse for a wrong name, type or enum value is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vnc_api.gen import resource_common, resource_xsd

# Fields every resource body may carry besides its properties and references.
COMMON_FIELDS = frozenset(
    {"uuid", "fq_name", "parent_type", "parent_uuid", "parent_href", "name", "href"}
)
_INTEGERS = frozenset({"integer", "int", "long", "short", "unsignedLong", "unsignedInt"})


class SchemaError(ValueError):
    """A body the real server would refuse (400)."""


@dataclass(frozen=True, slots=True)
class ResourceType:
    name: str  # virtual-network
    cls: Any

    @property
    def object_type(self) -> str:  # virtual_network
        return self.name.replace("-", "_")

    @property
    def parent_types(self) -> list[str]:
        return list(self.cls.parent_types)

    @property
    def prop_fields(self) -> set[str]:
        return set(self.cls.prop_fields)

    @property
    def ref_fields(self) -> set[str]:
        return set(self.cls.ref_fields)

    def ref_target(self, field: str) -> str:
        return str(self.cls.ref_field_types[field][0])

    def ref_attr_type(self, field: str) -> str | None:
        attr = self.cls.ref_field_types[field][1]
        return None if attr in (None, "None") else str(attr)

    def ref_field_for(self, target_type: str) -> str | None:
        """The reference field of this type that points to `target_type`."""
        for field in self.cls.ref_fields:
            if self.ref_target(field) == target_type:
                return str(field)
        return None

    def prop_operations(self, field: str) -> str:
        return str(self.cls.prop_field_types[field]["operations"])


def resource_type(name: str) -> ResourceType | None:
    cls = getattr(resource_common, "".join(part.capitalize() for part in name.split("-")), None)
    if cls is None or getattr(cls, "resource_type", None) != name:
        return None
    return ResourceType(name=name, cls=cls)


def check_body(rtype: ResourceType, body: dict[str, Any]) -> None:
    """Property names and values, reference fields and their attributes; parents and
    reference targets are the store's to check."""
    for key, value in body.items():
        if key in COMMON_FIELDS:
            continue
        if key in rtype.prop_fields:
            meta = rtype.cls.prop_field_types[key]
            check_value(
                f"{rtype.name}.{key}",
                value,
                type_name=str(meta["xsd_type"]),
                is_complex=bool(meta["is_complex"]),
                is_array=False,
                restrictions=meta["restrictions"],
                restriction_type=meta["restriction_type"],
            )
        elif key in rtype.ref_fields:
            check_refs(rtype, key, value)
        else:
            raise SchemaError(f"{rtype.name} has no property or reference {key!r}")


def check_refs(rtype: ResourceType, field: str, refs: object) -> None:
    if refs is None:
        return
    if not isinstance(refs, list):
        raise SchemaError(f"{rtype.name}.{field} must be a list")
    for ref in refs:
        if not isinstance(ref, dict):
            raise SchemaError(f"{rtype.name}.{field}: each reference is an object")
        unknown = set(ref) - {"to", "uuid", "attr", "href"}
        if unknown:
            raise SchemaError(f"{rtype.name}.{field}: unknown keys {sorted(unknown)}")
        if "to" not in ref and "uuid" not in ref:
            raise SchemaError(f"{rtype.name}.{field}: a reference needs 'to' or 'uuid'")
        check_ref_attr(rtype, field, ref.get("attr"))


def check_ref_attr(rtype: ResourceType, field: str, attr: object) -> None:
    attr_type = rtype.ref_attr_type(field)
    if attr is None:
        return
    if attr_type is None:
        raise SchemaError(f"{rtype.name}.{field} takes no attribute")
    check_value(
        f"{rtype.name}.{field}.attr",
        attr,
        type_name=attr_type,
        is_complex=True,
        is_array=False,
        restrictions=None,
        restriction_type=None,
    )


def check_value(
    path: str,
    value: object,
    *,
    type_name: str,
    is_complex: bool,
    is_array: bool,
    restrictions: object,
    restriction_type: object,
) -> None:
    if value is None:
        return
    if is_array:
        if not isinstance(value, list):
            raise SchemaError(f"{path} must be a list")
        for index, item in enumerate(value):
            check_value(
                f"{path}[{index}]",
                item,
                type_name=type_name,
                is_complex=is_complex,
                is_array=False,
                restrictions=restrictions,
                restriction_type=restriction_type,
            )
        return
    if is_complex:
        cls = getattr(resource_xsd, type_name, None)
        if cls is None:
            raise SchemaError(f"{path}: unknown type {type_name}")
        if not isinstance(value, dict):
            raise SchemaError(f"{path} must be an object ({type_name})")
        fields = cls.attr_field_type_vals
        for key, item in value.items():
            meta = fields.get(key)
            if meta is None:
                raise SchemaError(f"{path}: {type_name} has no field {key!r}")
            check_value(
                f"{path}.{key}",
                item,
                type_name=str(meta["attr_type"]),
                is_complex=bool(meta["is_complex"]),
                is_array=bool(meta["is_array"]),
                restrictions=meta["restrictions"],
                restriction_type=meta["restriction_type"],
            )
        return
    simple = type_name.removeprefix("xsd:")
    if simple in _INTEGERS and (not isinstance(value, int) or isinstance(value, bool)):
        raise SchemaError(f"{path} must be an integer")
    if simple == "boolean" and not isinstance(value, bool):
        raise SchemaError(f"{path} must be a boolean")
    if simple == "string" and not isinstance(value, str):
        raise SchemaError(f"{path} must be a string")
    if restriction_type == "enum" and restrictions and value not in restrictions:  # type: ignore[operator]
        raise SchemaError(f"{path} must be one of {restrictions}, not {value!r}")
    if restriction_type == "range" and isinstance(restrictions, list) and len(restrictions) == 2:
        low, high = restrictions
        if not isinstance(value, int) or not low <= value <= high:
            raise SchemaError(f"{path} must be within [{low}, {high}], not {value!r}")
