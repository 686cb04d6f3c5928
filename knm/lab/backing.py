"""The lab's Kafka topics and PostgreSQL database: its own, made fresh and dropped at the
end, on the servers knm is pointed at (or on `knm dev services`, started if need be)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from importlib.resources import files
from pathlib import Path

from kafka import KafkaAdminClient
from sqlalchemy import make_url, text

from knm.core.settings import Settings
from knm.core.store.database import create_engine, upgrade
from knm.runtime.distributed import kafka_bus

log = logging.getLogger("knm.lab")

EXPORT = re.compile(r"^export (KNM_[A-Z_]+)=(.*)$")
LAB_PARTITIONS = 4


class BackingError(RuntimeError):
    pass


def dev_services() -> dict[str, str]:
    """`knm dev services up`, as its scripts do it; the `KNM_…` variables they print."""
    found: dict[str, str] = {}
    for name in ("postgres", "kafka"):
        script = Path(str(files("knm") / "dev" / f"{name}.sh"))
        for action in ("up", "env"):
            result = subprocess.run(
                ["bash", str(script), action], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise BackingError(f"{name} did not start: {result.stderr.strip()[-500:]}")
        for line in result.stdout.splitlines():
            match = EXPORT.match(line.strip())
            if match:
                found[match.group(1)] = match.group(2).strip("'\"")
    return found


def servers() -> tuple[str, str]:
    """(database URL, Kafka bootstrap): from the environment, else the dev services."""
    database = os.environ.get("KNM_DATABASE_URL", "")
    kafka = os.environ.get("KNM_KAFKA_BOOTSTRAP", "")
    if not database.startswith("postgresql") or not kafka:
        started = dev_services()
        database = database if database.startswith("postgresql") else started["KNM_DATABASE_URL"]
        kafka = kafka or started["KNM_KAFKA_BOOTSTRAP"]
    return database, kafka


def database_name(lab: str) -> str:
    return "knm_" + re.sub(r"[^a-z0-9]", "_", lab.lower())


def create_database(server_url: str, *, name: str) -> str:
    admin = create_engine(server_url)
    try:
        with admin.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


def drop_database(server_url: str, *, name: str) -> None:
    admin = create_engine(server_url)
    try:
        with admin.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def create_topics(*, bootstrap: str, prefix: str) -> None:
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
    specs = settings.topics().specs(partitions=LAB_PARTITIONS)
    kafka_bus(settings, client_id="knm-lab").create_topics(specs)


def delete_topics(*, bootstrap: str, prefix: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="knm-lab")
    try:
        ours = [topic for topic in admin.list_topics() if topic.startswith(prefix)]
        if ours:
            admin.delete_topics(ours)
    finally:
        admin.close()
