"""The migrations build exactly the schema the models describe, and the service knows its head."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from coordinator.db.migrate import SCHEMA_HEAD, head_revision, upgrade_to_head
from coordinator.db.models import Base


def test_the_service_expects_alembics_head() -> None:
    assert SCHEMA_HEAD == head_revision()


def test_migrations_match_the_models(tmp_path: Path) -> None:
    db = tmp_path / "schema.db"
    upgrade_to_head(f"sqlite+aiosqlite:///{db}")
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], diff
