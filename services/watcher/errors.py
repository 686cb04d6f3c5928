"""What goes wrong when the watcher reads objects, each said in one line."""

from __future__ import annotations


class BadManifestError(Exception):
    """A manifest knm cannot use. The message names the file, the object when known, and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidObjectError(Exception):
    """An object that breaks Kubernetes' rules or knm's: `Kind namespace/name: reason`.

    Raised by the converters, which know the object but not where it came from; each
    source adds that (a file and document, an API server).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
