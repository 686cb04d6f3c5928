"""`knm db`, `knm topics`, `knm state`: the store and the bus, administered."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from knm.cli.common import (
    DatabaseOption,
    FormatOption,
    KafkaOption,
    OutputFormat,
    PrefixOption,
    reported,
    settings,
)
from knm.cli.render import model_tables, print_tables
from knm.core.store.database import create_engine, require_current_schema, upgrade
from knm.runtime.distributed import kafka_bus
from services.allocator.report import plan_document

db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
topics_app = typer.Typer(help="The Kafka topics.", no_args_is_help=True)


@db_app.command("upgrade")
@reported
def db_upgrade(database_url: DatabaseOption = None) -> None:
    """Apply the migrations: bring the database's schema to this knm's."""
    engine = create_engine(settings(database_url=database_url).database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    print(f"database {where} is at the current schema")


@topics_app.command("create")
@reported
def topics_create(
    *,
    partitions: Annotated[int, typer.Option(help="Partitions of each topic.")] = 16,
    kafka_bootstrap: KafkaOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Create knm's topics (those missing), with the partitions and cleanup knm wants."""
    config = settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    specs = config.topics().specs(partitions=partitions)
    kafka_bus(config, client_id="knm-admin").create_topics(specs)
    for spec in specs:
        policy = "compacted" if spec.compacted else f"kept {spec.retention_ms // 86_400_000} d"
        print(f"{spec.name}: {spec.partitions} partitions, {policy}")


@reported
def state(
    *, output: FormatOption = OutputFormat.TABLE, database_url: DatabaseOption = None
) -> None:
    """The allocator's current state, from the database (the JSON of `knm plan`)."""
    engine = create_engine(settings(database_url=database_url).database_url)
    try:
        require_current_schema(engine)
        with engine.connect() as connection:
            document = plan_document(connection)
    finally:
        engine.dispose()
    if output is OutputFormat.JSON:
        print(json.dumps(document, indent=2))
    else:
        print_tables(Console(), model_tables(document))


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.add_typer(topics_app, name="topics")
    app.command()(state)
