from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

from knm.core.store.database import (
    SchemaMismatchError,
    current_revision,
    downgrade,
    head_revision,
    require_current_schema,
    upgrade,
)
from knm.core.store.schema import Base


def test_migrations_build_exactly_the_models_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_migrations_go_down_and_up_again(engine: Engine) -> None:
    downgrade(engine, "base")
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()


def test_a_database_without_the_schema_is_refused_with_what_to_run(bare_engine: Engine) -> None:
    with pytest.raises(SchemaMismatchError, match="knm db upgrade"):
        require_current_schema(bare_engine)


def test_a_database_ahead_of_this_code_is_refused(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaMismatchError, match="newer than this knm"):
        require_current_schema(engine)


def test_a_current_database_is_accepted(engine: Engine) -> None:
    require_current_schema(engine)
