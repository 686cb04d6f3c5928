"""Topic names and shapes. A prefix lets several installations share one Kafka."""

from __future__ import annotations

from dataclasses import dataclass

# Bus key of the cluster-wide overlay table on the vrouter topic. Node names are DNS
# subdomains, which cannot start with "_", so no node's program can share it.
OVERLAY_KEY = "_overlay"

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    # Compacted topics keep the newest message of each key: desired state, not a log.
    compacted: bool = False
    retention_ms: int = 7 * DAY_MS

    def config(self) -> dict[str, str]:
        if self.compacted:
            return {"cleanup.policy": "compact", "min.compaction.lag.ms": str(60_000)}
        return {"cleanup.policy": "delete", "retention.ms": str(self.retention_ms)}


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

    def specs(self, *, partitions: int) -> list[TopicSpec]:
        """Every topic knm uses, as `knm topics create` makes them."""
        return [
            # Facts and commands are logs: each message matters, not only the newest.
            TopicSpec(self.facts, partitions),
            TopicSpec(self.node_commands, partitions),
            # Intents and vrouter programs are snapshots per key.
            TopicSpec(self.intents, partitions, compacted=True),
            TopicSpec(self.vrouter, partitions, compacted=True),
            TopicSpec(self.errors, max(1, partitions // 4)),
            TopicSpec(self.dead_letters, max(1, partitions // 4), retention_ms=30 * DAY_MS),
        ]
