"""Manifest files: read into documents, then into the objects knm understands."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.watcher.errors import BadManifestError, InvalidObjectError
from services.watcher.objects import (
    Controller,
    EndpointSlice,
    Namespace,
    NetworkPolicy,
    Node,
    Pod,
    Service,
    loose_ref,
    parse_object,
    type_of,
)

SUFFIXES = frozenset({".yaml", ".yml", ".json"})


@dataclass(frozen=True, slots=True)
class SourceDocument:
    path: Path
    # The document's place in its file, counting from 1 as line numbers do.
    index: int
    body: dict[str, Any]
    # The object's place in the `items` of a List document, from 1; None for the rest.
    item: int | None = None

    @property
    def origin(self) -> str:
        """Where the document is, for messages: `path: document 2, item 3`."""
        item = f", item {self.item}" if self.item is not None else ""
        return f"{self.path}: document {self.index}{item}"


ManifestObject = Namespace | Pod | Controller | Service


@dataclass(frozen=True, slots=True)
class Declared:
    origin: str
    object: ManifestObject


@dataclass(frozen=True, slots=True)
class Declarations:
    objects: tuple[Declared, ...]
    # One line per document skipped or read in part, for the source to log.
    warnings: tuple[str, ...]


def load_documents(paths: Sequence[Path]) -> list[SourceDocument]:
    """Every document of the files and folders, in order; raises BadManifestError."""
    documents: list[SourceDocument] = []
    for path in _files(paths):
        documents.extend(_read(path))
    return documents


def declared_objects(documents: Sequence[SourceDocument]) -> Declarations:
    """The documents as validated objects; kinds knm does not read become warnings."""
    objects: list[Declared] = []
    warnings: list[str] = []
    for document in documents:
        try:
            parsed = parse_object(document.body)
        except InvalidObjectError as exc:
            raise BadManifestError(f"{document.origin}: {exc.message}") from None
        if parsed is None:
            api_version, kind = type_of(document.body)
            warnings.append(
                f"{document.origin}: skipped {api_version} {loose_ref(document.body, kind=kind)}: "
                "knm does not read this kind"
            )
            continue
        if isinstance(parsed.object, Node):
            warnings.append(
                f"{document.origin}: skipped {parsed.object.meta.ref}: "
                "nodes are simulated (see --nodes)"
            )
            continue
        if isinstance(parsed.object, EndpointSlice | NetworkPolicy):
            warnings.append(
                f"{document.origin}: skipped {parsed.object.meta.ref}: "
                "knm reads this kind from a live cluster only"
            )
            continue
        warnings.extend(f"{document.origin}: {note}" for note in parsed.ignored)
        objects.append(Declared(document.origin, parsed.object))
    return Declarations(tuple(objects), tuple(warnings))


# ---- finding files -----------------------------------------------------------------------


def _files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found = _folder(path)
        elif path.exists():
            found = [path]
        else:
            raise BadManifestError(f"{path}: no such file or directory")
        for file in found:
            # A file named twice (itself and through its folder) is read once.
            identity = file.resolve()
            if identity not in seen:
                seen.add(identity)
                files.append(file)
    return files


def _folder(folder: Path) -> list[Path]:
    def fail(error: OSError) -> None:
        raise BadManifestError(f"{error.filename}: cannot read: {error.strerror or error}")

    found: list[Path] = []
    for root, dirs, names in os.walk(folder, onerror=fail):
        # Hidden entries are skipped: a ConfigMap mounted as a volume holds each file
        # twice, once under a hidden `..<timestamp>` folder.
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        found.extend(
            Path(root, name)
            for name in names
            if not name.startswith(".") and Path(name).suffix.lower() in SUFFIXES
        )
    return sorted(found)


# ---- reading files -----------------------------------------------------------------------


def _read(path: Path) -> list[SourceDocument]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadManifestError(f"{path}: cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise BadManifestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    bodies = [_json(path, text)] if path.suffix.lower() == ".json" else _yaml(path, text)
    documents: list[SourceDocument] = []
    for index, body in enumerate(bodies, start=1):
        if body is None:
            continue
        if not isinstance(body, dict):
            raise BadManifestError(
                f"{path}: document {index}: not a map but {_shape(body)}; "
                "each document must be one Kubernetes object"
            )
        documents.extend(_unlist(path, index, body))
    return documents


# libyaml's parser when PyYAML was built with it (ten times faster on large manifests).
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml(path: Path, text: str) -> list[Any]:
    try:
        return list(yaml.load_all(text, Loader=_SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        reason = exc.problem or exc.context or "unreadable"
        raise BadManifestError(f"{path}: invalid YAML{where}: {_one_line(reason)}") from None
    except yaml.YAMLError as exc:
        raise BadManifestError(f"{path}: invalid YAML: {_one_line(str(exc))}") from None


def _json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadManifestError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None


def _unlist(path: Path, index: int, body: dict[str, Any]) -> list[SourceDocument]:
    """A `List` (or `PodList`, ...) document as its items; any other as itself."""
    kind = body.get("kind")
    if not (isinstance(kind, str) and kind.endswith("List") and "items" in body):
        return [SourceDocument(path, index, body)]
    items = body["items"]
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadManifestError(
            f"{path}: document {index}: {kind}: items must be a list, not {_shape(items)}"
        )
    documents: list[SourceDocument] = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise BadManifestError(
                f"{path}: document {index}, item {number}: not a map but {_shape(item)}"
            )
        # The API serves the items of a typed list (PodList) without their own kind.
        own = {} if kind == "List" else {"apiVersion": body.get("apiVersion"), "kind": kind[:-4]}
        documents.append(SourceDocument(path, index, {**own, **item}, item=number))
    return documents


def _shape(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())
