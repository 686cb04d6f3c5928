"""Configuration from flags and `KNM_` environment variables."""

from __future__ import annotations

import re
from datetime import timedelta
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from knm.core.domain.model import NetworkSettings
from knm.core.topics import Topics

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KNM_", extra="ignore")

    database_url: str = "sqlite:///knm.db"
    kafka_bootstrap: str | None = None
    kubeconfig: str | None = None
    topic_prefix: str = "knm."

    pod_pools: Annotated[list[IPv4Network], NoDecode] = [IPv4Network("10.0.0.0/16")]
    block_prefix: int = Field(default=26, ge=8, le=32)
    service_pools: Annotated[list[IPv4Network], NoDecode] = [IPv4Network("10.254.0.0/16")]
    # LoadBalancer services' ingress addresses (status.loadBalancer.ingress).
    public_pools: Annotated[list[IPv4Network], NoDecode] = [IPv4Network("10.1.0.0/16")]
    gateway: IPv4Address = IPv4Address("169.254.1.1")
    collection_label: str = "name"
    uses_label: str = "uses"
    uses_annotation: str = "knm.io/uses"
    quarantine_seconds: float = Field(default=60.0, ge=0)
    # Simulated nodes of the manifest source get underlay addresses from here.
    node_underlay: IPv4Network = IPv4Network("192.168.0.0/16")

    # The contrail applier backend: the VNC config API, an optional Keystone token, the
    # name knm's annotations give this installation, and how often it reconciles anyway.
    contrail_api_url: str = "http://127.0.0.1:8082"
    contrail_auth_token: str | None = None
    contrail_cluster: str = "knm"
    contrail_resync_seconds: float = Field(default=30.0, gt=0)
    # The agent's contrail mode: the node's vrouter agent port API.
    vrouter_port_api_url: str = "http://127.0.0.1:9091"

    batch_size: int = Field(default=500, ge=1, le=100_000)
    log_level: str = "INFO"
    log_format: Literal["json", "human"] = "json"

    # The audit API's accepted bearer tokens, as SHA-256 hex digests: a leaked setting
    # does not leak a token. `printf %s "$TOKEN" | sha256sum` makes one.
    audit_token_hashes: Annotated[list[str], NoDecode] = []

    @field_validator(
        "pod_pools", "service_pools", "public_pools", "audit_token_hashes", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)

    @field_validator("audit_token_hashes")
    @classmethod
    def _sha256_hex(cls, value: list[str]) -> list[str]:
        digests = [digest.lower() for digest in value]
        for digest in digests:
            if not _SHA256_HEX.fullmatch(digest):
                raise ValueError(
                    "each token hash must be a SHA-256 digest in hex (64 characters), "
                    'not a token: printf %s "$TOKEN" | sha256sum'
                )
        return digests

    def network(self) -> NetworkSettings:
        return NetworkSettings(
            pod_pools=tuple(self.pod_pools),
            block_prefix=self.block_prefix,
            service_pools=tuple(self.service_pools),
            public_pools=tuple(self.public_pools),
            gateway=self.gateway,
            collection_label=self.collection_label,
            uses_label=self.uses_label,
            uses_annotation=self.uses_annotation,
            quarantine=timedelta(seconds=self.quarantine_seconds),
        )

    def topics(self) -> Topics:
        return Topics(prefix=self.topic_prefix)
