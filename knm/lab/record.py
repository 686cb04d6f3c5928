"""What a running lab made and where it is: `<home>/<name>/lab.json`, rewritten whole
(atomically) by the lab's daemon and read by `knm lab probe|matrix|down`."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

DEFAULT_HOME = Path("/var/tmp")


class PodRecord(BaseModel):
    key: str
    uid: str
    node: str
    netns: str
    ip: str
    network: str
    ports: list[int]


class ServiceRecord(BaseModel):
    key: str
    vip: str
    network: str
    ports: list[int]
    backends: list[str]


class PolicyRecord(BaseModel):
    from_network: str
    to_network: str
    ports: list[int]


class NodeRecord(BaseModel):
    name: str
    netns: str
    address: str
    cni_socket: str
    agent_health_port: int


class LabRecord(BaseModel):
    name: str
    daemon_pid: int | None = None
    database_url: str
    database_name: str
    kafka_bootstrap: str
    topic_prefix: str
    ready: bool = False
    namespaces: list[str] = Field(default_factory=list)
    nodes: list[NodeRecord] = Field(default_factory=list)
    processes: dict[str, int] = Field(default_factory=dict)
    pods: list[PodRecord] = Field(default_factory=list)
    services: list[ServiceRecord] = Field(default_factory=list)
    policies: list[PolicyRecord] = Field(default_factory=list)
    problems: dict[str, str] = Field(default_factory=dict)


def lab_dir(name: str, *, home: Path | None = None) -> Path:
    base = home or Path(os.environ.get("KNM_LAB_HOME", str(DEFAULT_HOME)))
    return base / name


def path(name: str, *, home: Path | None = None) -> Path:
    return lab_dir(name, home=home) / "lab.json"


def load(name: str, *, home: Path | None = None) -> LabRecord | None:
    try:
        text = path(name, home=home).read_text()
    except FileNotFoundError:
        return None
    return LabRecord.model_validate_json(text)


def save(record: LabRecord, *, home: Path | None = None) -> None:
    target = path(record.name, home=home)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_suffix(".tmp")
    scratch.write_text(record.model_dump_json(indent=2))
    scratch.replace(target)
