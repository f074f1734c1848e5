"""Mappings saved per entity under a name (``_crm_import_mapping``), for the next import of the same file."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import sqlalchemy as sa

from .mapping import Mapping, MappingError, check_mapping

NAME = re.compile(r"^[\w\- .]{1,64}$")


def load_mapping(service, entity: str, name: str) -> dict:
    """The saved mapping as JSON; ``MappingError`` when there is none of that name."""
    m = service.mappings
    with service.db.read() as conn:
        found = conn.execute(sa.select(m.c.mapping).where(m.c.entity == entity, m.c.name == name)).scalar()
    if found is None:
        from .service import ImportError_

        raise ImportError_(f"no mapping {name!r} is saved for {entity}", status=404, field="mapping")
    return found


def save_mapping(service, entity: str, name: str, data: dict, *, user_id: int | None, access=None) -> dict:
    """Check and save (or replace) a mapping of ``entity`` under ``name``."""
    from .service import ImportError_

    ent = service.records.model.entities.get(entity)
    if ent is None:
        raise ImportError_(f"there is no entity {entity!r}", status=404, field="entity")
    if not NAME.match(name):
        raise ImportError_("a mapping's name is 1 to 64 letters, digits, spaces, '-', '_' or '.'", field="name")
    try:
        mapping = Mapping.from_json(data)
        check_mapping(ent, list(mapping.columns), mapping, access)
    except MappingError as exc:
        raise ImportError_(exc.message, field=exc.column or exc.field, code="mapping") from None
    m = service.mappings
    row = {"mapping": mapping.as_json(), "user_id": user_id, "updated_at": datetime.now(timezone.utc)}
    with service.db.write() as conn:
        if conn.execute(m.update().where(m.c.entity == entity, m.c.name == name).values(**row)).rowcount == 0:
            conn.execute(m.insert().values(entity=entity, name=name, **row))
    return mapping.as_json()
