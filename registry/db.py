"""Engine, sessions and schema migrations of the SQLite registry database."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from mdl.registry.errors import NotInitialised, RegistryError, SchemaMismatch
from mdl.text import first_line

BUSY_TIMEOUT_S = 30


def make_engine(db_path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{db_path}", connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cur.close()

    return engine


@contextmanager
def managed_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Commit on success, roll back on any exception (the MLflow store pattern)."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# --- migrations ---------------------------------------------------------------------------------


def _alembic_config(engine: Engine):
    from alembic.config import Config

    from mdl import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", str(engine.url))
    return cfg


def head_revision(engine: Engine) -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def _unreadable(engine: Engine, exc: DatabaseError) -> RegistryError:
    reason = first_line(exc.orig if exc.orig is not None else exc)
    return RegistryError(f"{engine.url.database} is not a readable SQLite database ({reason})",
                         hint="move it aside (it may be damaged), then run `mdl init`")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except DatabaseError as exc:
        raise _unreadable(engine, exc) from None


def is_blank(engine: Engine) -> bool:
    """No tables at all: a 0-byte file, or one left by an `mdl init` that failed before its schema."""
    try:
        return not inspect(engine).get_table_names()
    except DatabaseError as exc:
        raise _unreadable(engine, exc) from None


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def check_schema(engine: Engine, home: Path) -> None:
    """Refuse a database whose schema is not exactly this mdl's head revision."""
    current, head = current_revision(engine), head_revision(engine)
    if current == head:
        return
    if current is None:
        if not is_blank(engine):
            raise RegistryError(f"{engine.url.database} holds tables but no mdl schema",
                                hint="move it aside, then run `mdl init`")
        raise NotInitialised(f"no mdl registry at {home} (its registry.db is empty)", hint=f"run `mdl init --home {home}`")
    from alembic.script import ScriptDirectory

    known = {rev.revision for rev in ScriptDirectory.from_config(_alembic_config(engine)).walk_revisions()}
    if current not in known:
        raise SchemaMismatch(
            f"registry schema {current} at {home} is newer than this mdl knows (head {head})",
            hint="upgrade mdl",
        )
    raise SchemaMismatch(
        f"registry schema at {home} is older than this mdl ({current} -> {head})",
        hint=f"run `mdl db upgrade --home {home}`",
    )
