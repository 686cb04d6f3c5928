"""Topic names. A prefix lets several installations share one Kafka."""

from __future__ import annotations

from dataclasses import dataclass

# Bus key of the cluster-wide overlay table on the vrouter topic. Node names are DNS
# subdomains, which cannot start with "_", so no node's program can share it.
OVERLAY_KEY = "_overlay"


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = "knm."

    @property
    def facts(self) -> str:
        return f"{self.prefix}facts"

    @property
    def intents(self) -> str:
        return f"{self.prefix}intents"

    @property
    def node_commands(self) -> str:
        return f"{self.prefix}node-commands"

    @property
    def vrouter(self) -> str:
        return f"{self.prefix}vrouter"

    @property
    def errors(self) -> str:
        return f"{self.prefix}errors"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}dead-letters"
