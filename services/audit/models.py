"""The answers' shapes: the API's responses, and the rows the command line prints."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network

from pydantic import BaseModel, ConfigDict, Field

from knm.core.domain.model import AddressAction, AddressKind, NetworkKind


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Holding(Answer):
    """One holder's tenure of one address: from its allocation to its release."""

    ip: IPv4Address
    kind: AddressKind
    namespace: str
    name: str
    uid: str
    network: str | None
    node: str | None
    service: str | None = Field(
        description="For floating IPs: the service (`namespace/name`) whose VIP the pod carries."
    )
    pool: str | None
    allocated_at: datetime | None = Field(
        description="None only if the history lacks the allocation (it never should)."
    )
    allocation_fact_id: str | None = Field(description="The fact that caused the allocation.")
    released_at: datetime | None = Field(description="None while the address is still held.")
    release_fact_id: str | None = Field(description="The fact that caused the release.")


class Holder(Answer):
    """Who held an address at an instant, and since when."""

    ip: IPv4Address
    at: datetime
    kind: AddressKind
    namespace: str
    name: str
    uid: str
    network: str | None
    node: str | None
    pool: str | None
    allocated_at: datetime
    allocation_fact_id: str


class AddressHistory(Answer):
    ip: IPv4Address
    holdings: list[Holding] = Field(
        description="Oldest first: the holders (pods and services) and the pods that carried "
        "the address as a floating IP, whose tenure overlaps the window."
    )
    truncated: bool = Field(
        description="More holdings overlap the window than `limit`: continue with `from` set "
        "to the last one's `allocated_at`."
    )


class PodHistory(Answer):
    namespace: str
    name: str
    holdings: list[Holding] = Field(
        description="Oldest first: every address and floating IP pods of this name held, "
        "across their UIDs."
    )
    truncated: bool


class ServiceHistory(Answer):
    namespace: str
    name: str
    vips: list[Holding] = Field(description="The service's VIPs over time, oldest first.")
    backends: list[Holding] = Field(
        description="Backend membership over time: each pod's tenure of the service's VIP "
        "as a floating IP, oldest first."
    )
    truncated: bool


class Change(Answer):
    """One line of the change log, as the allocator wrote it."""

    seq: int
    at: datetime
    action: AddressAction
    kind: AddressKind
    ip: IPv4Address
    pool: str | None
    namespace: str
    name: str
    uid: str
    network: str | None
    node: str | None
    service: str | None
    fact_id: str


class ChangePage(Answer):
    items: list[Change]
    next_cursor: str | None = Field(
        description="Pass it as `cursor` for the lines after this page (also once more lines "
        "have been written); None when there are no lines yet and no cursor was given."
    )
    has_more: bool = Field(description="More lines matched when this page was read.")


class PolicyPort(Answer):
    port: int
    protocol: str


class Policy(Answer):
    """A `uses` rule: `from_network` may reach the VIP of the service behind `to_network`."""

    name: str
    from_network: str
    to_network: str
    service: str | None = Field(description="`namespace/name`, while the service exists.")
    ports: list[PolicyPort]


class MemberKind(StrEnum):
    POD = "pod"
    SERVICE = "service"
    BACKEND = "backend"


class Member(Answer):
    """A pod of a pod network; a service network's service (its VIP) and backends."""

    kind: MemberKind
    namespace: str
    name: str
    uid: str
    ip: IPv4Address | None
    node: str | None


class NetworkSummary(Answer):
    name: str
    namespace: str
    kind: NetworkKind
    subject: str = Field(description="The collection, or the service, the network exists for.")
    members: int
    policies_from: int
    policies_to: int


class Networks(Answer):
    items: list[NetworkSummary]


class NetworkDetail(Answer):
    name: str
    namespace: str
    kind: NetworkKind
    subject: str
    members: list[Member]
    policies_from: list[Policy] = Field(description="What this network may reach.")
    policies_to: list[Policy] = Field(description="Who may reach this network.")


class BlockUsage(Answer):
    cidr: IPv4Network
    pool: IPv4Network
    node: str
    capacity: int
    used: int
    quarantined: int
    free: int


class PoolKind(StrEnum):
    POD = "pod"
    SERVICE = "service"
    PUBLIC = "public"


class PoolUsage(Answer):
    pool: IPv4Network
    kind: PoolKind = Field(
        description="pod: pods' own addresses; service: VIPs; public: LoadBalancers' "
        "public addresses."
    )
    capacity: int = Field(description="Addresses that can be handed out.")
    used: int
    quarantined: int = Field(description="Released, and not handed out again until later.")
    free: int
    blocks_total: int | None = Field(description="Pod pools: node blocks the pool divides into.")
    blocks_claimed: int | None = Field(description="Pod pools: blocks claimed by nodes.")


class Pools(Answer):
    at: datetime
    pools: list[PoolUsage]
    blocks: list[BlockUsage]


class Problem(Answer):
    detail: str


class Health(Answer):
    status: str
    detail: str | None = None
