"""SQLAlchemy tables derived from the model, plus the engine's own system tables.

Every entity table has the system columns (id, created_at, updated_at, created_by, updated_by,
owner_id, version). Declared fields are nullable in the database: ``required`` is enforced by the
record service, so adding a required field to a populated table is a safe migration.
"""

from __future__ import annotations

import functools
import hashlib
import json

import sqlalchemy as sa

from engine.fields.sqltypes import UtcDateTime
from engine.metadata.model import AppModel, Entity

USER_ENTITY = "user"
NAMING = {"ix": "ix_%(table_name)s_%(column_0_N_name)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
          "fk": "fk_%(table_name)s_%(column_0_name)s", "pk": "pk_%(table_name)s"}
MAX_NAME = 60

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY


def index_name(table: str, columns, unique: bool = False) -> str:
    name = f"{'ux' if unique else 'ix'}_{table}_{'_'.join(columns)}"
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def build_metadata(model: AppModel) -> sa.MetaData:
    """All tables of the model (entities and system tables) in one ``MetaData``."""
    md = sa.MetaData(naming_convention=NAMING)
    _system_tables(md)
    _plugin_tables(md)
    for entity in model.entities.values():
        _entity_table(md, entity)
    return md


def _plugin_tables(md: sa.MetaData) -> None:
    """The default plugins' own tables (``crm_tables``: pools, approvals...). Always all of them, even of a
    plugin turned off with ``CRM_DISABLED_PLUGINS``, so that turning one off never drops its data."""
    _table_plugins().hook.crm_tables(metadata=md)


@functools.cache
def _table_plugins():
    from engine.plugins import make_plugin_manager

    return make_plugin_manager(entry_point_plugins=False)


def _entity_table(md: sa.MetaData, entity: Entity) -> sa.Table:
    user_fk = lambda: sa.ForeignKey(f"{USER_ENTITY}.id")
    columns = [
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.BigInteger(), user_fk()),
        sa.Column("updated_by", sa.BigInteger(), user_fk()),
        sa.Column("owner_id", sa.BigInteger(), user_fk()),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    ]
    for field in entity.fields.values():
        if not field.stored:
            continue
        args = [sa.ForeignKey(f"{field.target}.id")] if field.type_name in ("lookup", "user") else []
        info = {"sig": field.type.signature(field), "renamed_from": field.prop("renamed_from")}
        definition = computed_definition(field)
        if definition is not None:   # a migration backfills the column when this changes
            info["computed"] = definition
        columns.append(sa.Column(field.name, _column_type(entity, field), *args, nullable=True, info=info))
    # AUTOINCREMENT on SQLite: an id is never given twice, so a deleted record's history, ETags and
    # idempotent replays can never attach to a new one (PostgreSQL sequences never reuse either).
    table = sa.Table(entity.table, md, *columns, sqlite_autoincrement=True)
    for columns_, (unique, name) in _index_specs(entity).items():
        sa.Index(name or index_name(entity.table, columns_, unique), *(table.c[c] for c in columns_), unique=unique)
    return table


def computed_definition(field) -> str | None:
    """What a stored computed value is computed from (a formula's expression, a rollup's ``of``,
    function, field and ``where``, a field's ``follows``), as a text migrations compare; None for
    a field the engine does not compute."""
    if field.type_name == "formula":
        keys = ("expr", "returns", "scale", "blank_as_zero")
    elif field.type_name == "rollup":
        keys = ("of", "function", "field", "where")
    elif field.prop("follows") is not None:
        keys = ("follows",)
    else:
        return None
    return json.dumps({k: field.prop(k) for k in keys}, sort_keys=True, default=str)


def _column_type(entity: Entity, field) -> sa.types.TypeEngine:
    """The field type's column, or for an ``encrypted`` field a text column holding ciphertext."""
    if field.prop("encrypted"):
        from .crypto import EncryptedText

        return EncryptedText(f"{entity.table}.{field.name}")
    return field.type.column_type(field)


def _index_specs(entity: Entity) -> dict[tuple[str, ...], tuple[bool, str | None]]:
    """Indexes: owner, lookups, unique and indexed fields, declared indexes, the list layout's sort."""
    specs: dict[tuple[str, ...], bool] = {("owner_id",): False}
    names: dict[tuple[str, ...], str] = {}
    for field in entity.fields.values():
        if not field.stored:
            continue
        if field.unique:
            specs[(field.name,)] = True
        elif field.target or field.prop("indexed") or field.type_name in ("reference", "autonumber"):
            specs.setdefault((field.name,), False)
    for index in entity.indexes:
        specs[index.fields] = specs.get(index.fields, False) or index.unique
        if index.name:
            names[index.fields] = index.name
    sort = (entity.layouts.get("list") or {}).get("sort")
    if sort:
        keys = tuple(k.lstrip("-") for k in sort.split(","))
        specs.setdefault(keys + (("id",) if "id" not in keys else ()), False)
    return {cols: (unique, names.get(cols)) for cols, unique in specs.items()}


def _system_tables(md: sa.MetaData) -> None:
    sa.Table("_crm_model", md,
             sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
             sa.Column("digest", sa.String(32), nullable=False),
             sa.Column("applied_at", UtcDateTime(), nullable=False),
             sa.Column("snapshot", sa.JSON(), nullable=False),
             sa.Column("plan", sa.JSON(), nullable=False),
             sa.Column("backup", sa.String(500)))
    history = sa.Table("_crm_history", md,
                       sa.Column("id", Id, primary_key=True, autoincrement=True),
                       sa.Column("entity", sa.String(64), nullable=False),
                       sa.Column("record_id", sa.BigInteger(), nullable=False),
                       sa.Column("field", sa.String(64), nullable=False),
                       sa.Column("old_value", sa.JSON()),
                       sa.Column("new_value", sa.JSON()),
                       sa.Column("changed_by", sa.BigInteger()),
                       sa.Column("changed_at", UtcDateTime(), nullable=False))
    sa.Index("ix__crm_history_record", history.c.entity, history.c.record_id, history.c.id)
    sa.Table("_crm_credential", md,
             sa.Column("user_id", sa.BigInteger(), sa.ForeignKey(f"{USER_ENTITY}.id"), primary_key=True,
                       autoincrement=False),
             sa.Column("password_hash", sa.String(255), nullable=False),
             sa.Column("updated_at", UtcDateTime(), nullable=False),
             sa.Column("must_change", sa.Boolean()))   # a temporary password an admin set
    token = sa.Table("_crm_token", md,
                     sa.Column("id", Id, primary_key=True, autoincrement=True),
                     sa.Column("user_id", sa.BigInteger(), sa.ForeignKey(f"{USER_ENTITY}.id"), nullable=False),
                     sa.Column("name", sa.String(120), nullable=False),
                     sa.Column("token_hash", sa.String(64), nullable=False),
                     sa.Column("created_at", UtcDateTime(), nullable=False),
                     sa.Column("expires_at", UtcDateTime()),
                     sa.Column("revoked_at", UtcDateTime()))
    sa.Index("ux__crm_token_hash", token.c.token_hash, unique=True)
    sa.Table("_crm_idempotency", md,
             sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
             sa.Column("key", sa.String(255), primary_key=True),
             sa.Column("request_hash", sa.String(64), nullable=False),
             sa.Column("status_code", sa.Integer()),
             sa.Column("body", sa.Text()),
             sa.Column("headers", sa.JSON()),
             sa.Column("created_at", UtcDateTime(), nullable=False))
    sa.Table("_crm_counter", md,
             sa.Column("name", sa.String(120), primary_key=True),
             sa.Column("value", sa.BigInteger(), nullable=False))
    _automation_tables(md)
    _security_tables(md)
    _ui_tables(md)


def _automation_tables(md: sa.MetaData) -> None:
    """Automation runs (the outbox and the run log), their done actions, and time triggers."""
    run = sa.Table("_crm_automation_run", md,
                   sa.Column("id", Id, primary_key=True, autoincrement=True),
                   sa.Column("key", sa.String(255), nullable=False),
                   sa.Column("automation", sa.String(130), nullable=False),
                   sa.Column("entity", sa.String(64), nullable=False),
                   sa.Column("record_id", sa.BigInteger()),
                   sa.Column("trigger", sa.String(120), nullable=False),
                   sa.Column("status", sa.String(16), nullable=False),
                   sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
                   sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="1"),
                   sa.Column("depth", sa.Integer(), nullable=False, server_default="0"),
                   sa.Column("user_id", sa.BigInteger()),
                   sa.Column("payload", sa.JSON()),
                   sa.Column("error", sa.Text()),
                   sa.Column("duration_ms", sa.Integer()),
                   sa.Column("created_at", UtcDateTime(), nullable=False),
                   sa.Column("due_at", UtcDateTime(), nullable=False),
                   sa.Column("started_at", UtcDateTime()),
                   sa.Column("finished_at", UtcDateTime()),
                   sa.Column("lease_until", UtcDateTime()))
    sa.Index("ux__crm_automation_run_key", run.c.key, unique=True)
    sa.Index("ix__crm_automation_run_status", run.c.status, run.c.due_at)
    sa.Index("ix__crm_automation_run_record", run.c.entity, run.c.record_id)
    sa.Table("_crm_action_done", md,
             sa.Column("run_id", sa.BigInteger(), primary_key=True, autoincrement=False),
             sa.Column("action", sa.Integer(), primary_key=True, autoincrement=False),
             sa.Column("result", sa.JSON()),
             sa.Column("done_at", UtcDateTime(), nullable=False))
    schedule = sa.Table("_crm_schedule", md,
                        sa.Column("automation", sa.String(130), primary_key=True),
                        sa.Column("record_id", sa.BigInteger(), primary_key=True, autoincrement=False),
                        sa.Column("fire_at", UtcDateTime(), nullable=False))
    sa.Index("ix__crm_schedule_fire_at", schedule.c.fire_at)
    sa.Table("_crm_timer", md,
             sa.Column("name", sa.String(140), primary_key=True),
             sa.Column("signature", sa.String(64)),
             sa.Column("next_at", UtcDateTime()))


def _security_tables(md: sa.MetaData) -> None:
    """The audit log (``actor_id``, not ``user_id``: deleting a user keeps their trail), the
    login attempts that throttling counts and the open web sessions."""
    audit = sa.Table("_crm_audit", md,
                     sa.Column("id", Id, primary_key=True, autoincrement=True),
                     sa.Column("at", UtcDateTime(), nullable=False),
                     sa.Column("kind", sa.String(40), nullable=False),
                     sa.Column("actor_id", sa.BigInteger()),
                     sa.Column("ip", sa.String(64)),
                     sa.Column("entity", sa.String(64)),
                     sa.Column("record_id", sa.BigInteger()),
                     sa.Column("detail", sa.JSON()))
    sa.Index("ix__crm_audit_kind_at", audit.c.kind, audit.c.at)
    sa.Index("ix__crm_audit_actor_at", audit.c.actor_id, audit.c.at)
    attempts = sa.Table("_crm_login_attempt", md,
                        sa.Column("id", Id, primary_key=True, autoincrement=True),
                        sa.Column("email", sa.String(255), nullable=False),
                        sa.Column("ip", sa.String(64), nullable=False),
                        sa.Column("at", UtcDateTime(), nullable=False),
                        sa.Column("ok", sa.Boolean(), nullable=False))
    sa.Index("ix__crm_login_attempt_email_ip_at", attempts.c.email, attempts.c.ip, attempts.c.at)
    sessions = sa.Table("_crm_session", md,   # web sessions, so that logout ends copies of the cookie too
                        sa.Column("key_hash", sa.String(64), primary_key=True),
                        sa.Column("user_id", sa.BigInteger(), sa.ForeignKey(f"{USER_ENTITY}.id"), nullable=False),
                        sa.Column("created_at", UtcDateTime(), nullable=False),
                        sa.Column("expires_at", UtcDateTime(), nullable=False),
                        # what the user's session list shows (added later: nullable for older rows)
                        sa.Column("last_seen_at", UtcDateTime()),
                        sa.Column("ip", sa.String(64)),
                        sa.Column("user_agent", sa.String(255)))
    sa.Index("ix__crm_session_user", sessions.c.user_id)


def _ui_tables(md: sa.MetaData) -> None:
    """The list views users save in the web UI: a name, a ``where`` condition in the formula
    language and a sort, per user and entity (they go with their user)."""
    view = sa.Table("_crm_saved_view", md,
                    sa.Column("id", Id, primary_key=True, autoincrement=True),
                    sa.Column("user_id", sa.BigInteger(), sa.ForeignKey(f"{USER_ENTITY}.id"), nullable=False),
                    sa.Column("entity", sa.String(64), nullable=False),
                    sa.Column("name", sa.String(120), nullable=False),
                    sa.Column("where_text", sa.Text()),
                    sa.Column("sort", sa.String(255)),
                    sa.Column("created_at", UtcDateTime(), nullable=False))
    sa.Index("ux__crm_saved_view_user_entity_name", view.c.user_id, view.c.entity, view.c.name, unique=True)
