"""Topic names and shapes. A prefix lets several installations share one Kafka."""

from __future__ import annotations

from dataclasses import dataclass

# Bus key of the cluster-wide overlay table on the vrouter topic. Node names are DNS
# subdomains, which cannot start with "_", so no node's program can share it.
OVERLAY_KEY = "_overlay"

DAY_MS = 24 * 3600 * 1000


# A node's vrouter program travels in pieces, each keyed under the node's name (which
# has no "/", so one node's keys never start with another's).
def network_key(node: str, network: str) -> str:
    return f"{node}/network/{network}"


def vip_key(node: str, vip: str) -> str:
    return f"{node}/vip/{vip}"


def piece_of_key(key: str) -> tuple[str, str, str]:
    """(node, kind, name) of a vrouter topic key: kind is "node" (name empty),
    "network" or "vip"."""
    node, _, rest = key.partition("/")
    if not rest:
        return (node, "node", "")
    kind, _, name = rest.partition("/")
    return (node, kind, name)


def is_node_key(key: str | None, node: str) -> bool:
    """Whether a vrouter topic key belongs to `node`'s program."""
    return key is not None and (key == node or key.startswith(f"{node}/"))


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

    def group(self, role: str) -> str:
        """The consumer group of one of this installation's roles. Groups are shared by
        name across a Kafka cluster like topics: installations that share one must not
        share groups, or each would take a part of the other's partitions."""
        return f"{self.prefix}{role}"

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
