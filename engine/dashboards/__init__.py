"""Dashboards declared in metadata: numbers and charts, each computed by one SQL query.

```yaml
dashboard: sales
label: {en: Sales, zh: 销售}
widgets:
  - {name: pipeline, type: funnel, entity: opportunity, group_by: stage, aggregate: sum, field: amount,
     where: "NOT(stage IN ('won', 'lost'))"}
  - {name: won_by_month, type: bar, entity: opportunity, group_by: close_date, bucket: month,
     aggregate: sum, field: amount, where: "stage = 'won'"}
```

Widget types: ``number`` (one value), ``bar`` / ``line`` (a value per group), ``funnel`` (a bar
per group in the picklist's order). ``group_by`` is a picklist, lookup or user field, or a date /
datetime field bucketed by ``day``, ``week``, ``month``, ``quarter`` or ``year``. ``aggregate`` is
``count`` (default), ``sum``, ``avg``, ``min`` or ``max`` of a number field. ``where`` is a formula
condition that runs in SQL. Every query is limited to the records the viewer may see (their role's
scope and sharing rules). ``compile_dashboards`` checks the declarations (file:line through the
loader); ``compute`` runs one widget; ``engine.dashboards.svg`` draws it. The ``dashboards`` default
plugin (``plugin.py``) compiles them at startup and mounts their API routes (``api.py``) and screen,
navigation entries and home panel (``ui.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from engine.metadata.declared import DocProblem as Problem
from engine.metadata.model import AppModel, Label

TYPES = ("number", "bar", "line", "funnel")
AGGREGATES = ("count", "sum", "avg", "min", "max")
BUCKETS = ("day", "week", "month", "quarter", "year")
NUMERIC = ("integer", "number", "currency", "percent", "rollup", "formula")
GROUPABLE = ("picklist", "lookup", "user", "boolean", "date", "datetime")
SYSTEM_GROUPS = {"owner_id": "user", "created_at": "datetime", "updated_at": "datetime"}


@dataclass(frozen=True)
class Widget:
    name: str
    label: Label
    type: str
    entity: str
    aggregate: str = "count"
    field: str | None = None
    group_by: str | None = None
    bucket: str | None = None
    condition: Any = None      # CompiledRule


@dataclass(frozen=True)
class Dashboard:
    name: str
    label: Label
    widgets: tuple[Widget, ...]

    def widget(self, name: str) -> Widget | None:
        return next((w for w in self.widgets if w.name == name), None)



def compile_dashboards(model: AppModel, functions=None) -> tuple[dict[str, Dashboard], list[Problem]]:
    from engine import rules

    out: dict[str, Dashboard] = {}
    problems: list[Problem] = []
    for i, doc in enumerate(model.documents.get("dashboard", ())):
        def problem(path, message, i=i):
            problems.append(Problem(i, path, message))

        if doc["dashboard"] in out:
            problem(("dashboard",), f"dashboard {doc['dashboard']!r} is declared twice")
            continue
        widgets, names = [], set()
        for j, w in enumerate(doc["widgets"]):
            at = ("widgets", j)
            if w["name"] in names:
                problem((*at, "name"), f"widget {w['name']!r} is declared twice")
                continue
            names.add(w["name"])
            ent = model.entities.get(w["entity"])
            if ent is None:
                problem((*at, "entity"), f"there is no entity {w['entity']!r}")
                continue
            aggregate = w.get("aggregate", "count")
            fname = w.get("field")
            if aggregate != "count":
                fld = ent.fields.get(fname) if fname else None
                if fld is None or not fld.stored or (fld.type_name not in NUMERIC) or \
                        (fld.type_name == "formula" and fld.prop("returns") not in NUMERIC):
                    problem((*at, "field"), f"{aggregate} needs a stored number field of {ent.name}; {fname!r} is not one")
                    continue
            group = w.get("group_by")
            if w["type"] == "number" and group:
                problem((*at, "group_by"), "a number widget has no groups")
                continue
            if w["type"] != "number":
                kind = _group_kind(ent, group)
                if kind is None:
                    problem((*at, "group_by"), f"{w['type']} needs group_by: a picklist, lookup, user, boolean or "
                                               f"date field of {ent.name}; {group!r} is not one")
                    continue
                if kind in ("date", "datetime") and w.get("bucket") not in BUCKETS:
                    problem((*at, "bucket"), f"grouping by the date {group!r} needs bucket: {', '.join(BUCKETS)}")
                    continue
                if w["type"] == "funnel" and kind != "picklist":
                    problem((*at, "group_by"), "a funnel goes through the values of a picklist")
                    continue
            condition = None
            if "where" in w:
                try:
                    condition = rules.compile(w["where"], ent.name, model, registry=functions)
                    if condition.type not in ("boolean", "null"):
                        raise rules.RuleTypeError(f"where needs a condition (TRUE or FALSE), not a {condition.type}")
                    if not condition.sql_capable:
                        raise rules.NotInSQLError(condition.sql_problem or "it cannot run in the database")
                except rules.RuleError as exc:
                    problem((*at, "where"), f"{exc.kind.replace('_', ' ')} error: {exc.message} (in {w['where']!r})")
                    continue
            widgets.append(Widget(w["name"], Label.of(w.get("label"), w["name"]), w["type"], ent.name, aggregate,
                                  fname, group, w.get("bucket"), condition))
        out[doc["dashboard"]] = Dashboard(doc["dashboard"], Label.of(doc.get("label"), doc["dashboard"]),
                                          tuple(widgets))
    return out, problems


def _group_kind(ent, name: str | None) -> str | None:
    if not name:
        return None
    if name in SYSTEM_GROUPS:
        return SYSTEM_GROUPS[name]
    fld = ent.fields.get(name)
    if fld is None or not fld.stored:
        return None
    if fld.type_name in GROUPABLE:
        return fld.type_name
    return None


@dataclass
class Result:
    widget: Widget
    value: Any = None                                  # number widgets
    groups: list[tuple[Any, str, Any]] | None = None   # (key, label, value) for charts

    def as_json(self) -> dict:
        def plain(v):
            return str(v) if isinstance(v, Decimal) else v

        out = {"name": self.widget.name, "type": self.widget.type, "label": dict(self.widget.label.texts)}
        if self.groups is None:
            out["value"] = plain(self.value)
        else:
            out["groups"] = [{"key": k if not hasattr(k, "isoformat") else k.isoformat(), "label": label,
                              "value": plain(v)} for k, label, v in self.groups]
        return out


def compute(records, widget: Widget, *, access=None, lang: str = "en", now: datetime | None = None) -> Result:
    """One widget's figures in one query, over the records ``access`` may see (all when None)."""
    from engine import rules

    svc = records
    ent = svc.model.entity(widget.entity)
    table = svc.table(ent.name)
    now = now or datetime.now(timezone.utc)
    scope = rules.Scope(svc.metadata, ent.name, svc.model, dialect=svc.db.dialect, now=now)
    value = _aggregate(svc, ent, table, widget)
    conditions = []
    if widget.condition is not None:
        conditions.append(widget.condition.where(scope))
    if access is not None:
        access.require(ent.name, "read")
        visible = access.visibility(svc, ent.name, table)
        if visible is not None:
            conditions.append(visible)
    if widget.type == "number":
        stmt = scope.apply(sa.select(*value).select_from(table).where(*conditions))
        with svc.db.read(timeout_ms=10_000) as conn:
            row = conn.execute(stmt).one()
        return Result(widget, value=_finish(widget, row))
    key = _group_key(svc, table, widget)
    stmt = scope.apply(sa.select(key.label("k"), *value).select_from(table).where(*conditions).group_by(key))
    with svc.db.read(timeout_ms=10_000) as conn:
        rows = [(row[0], _finish(widget, row[1:])) for row in conn.execute(stmt)]
        labels = _labels(svc, conn, ent, widget, [k for k, _ in rows], lang)
    rows = [(_bucket_key(widget, k), v) for k, v in rows]
    rows = _ordered(ent, widget, rows)
    return Result(widget, groups=[(k, labels.get(k, _default_label(k)), v) for k, v in rows])


def _aggregate(svc, ent, table, widget: Widget) -> list:
    if widget.aggregate == "count":
        return [sa.func.count()]
    col = table.c[widget.field]
    if widget.aggregate == "avg":   # exact: SUM / COUNT (SQLite stores decimals as scaled integers)
        return [sa.func.sum(col), sa.func.count(col)]
    fn = {"sum": sa.func.sum, "min": sa.func.min, "max": sa.func.max}[widget.aggregate]
    return [sa.type_coerce(fn(col), col.type)]


def _finish(widget: Widget, row) -> Any:
    if widget.aggregate == "avg":
        total, count = row[0], row[1]
        if not count:
            return None
        return (Decimal(total) / Decimal(count)).quantize(Decimal("0.01")) if total is not None else None
    value = row[0]
    if widget.aggregate == "count":
        return int(value or 0)
    return value


def _group_key(svc, table, widget: Widget):
    col = table.c[widget.group_by]
    if widget.bucket is None:
        return col
    if svc.db.is_sqlite:
        fmt = {"day": "%Y-%m-%d", "week": "%Y-%W", "month": "%Y-%m", "quarter": "%Y-%m", "year": "%Y"}[widget.bucket]
        return sa.func.strftime(fmt, col)
    return sa.func.to_char(sa.func.date_trunc(widget.bucket, col),
                           {"day": "YYYY-MM-DD", "week": "IYYY-IW", "month": "YYYY-MM", "quarter": "YYYY-MM",
                            "year": "YYYY"}[widget.bucket])


def _bucket_key(widget: Widget, key: Any) -> Any:
    """Quarter buckets come back as months on SQLite (no %q): fold them here; keys become text."""
    if widget.bucket == "quarter" and isinstance(key, str) and len(key) == 7:
        year, month = key.split("-")
        return f"{year}-Q{(int(month) - 1) // 3 + 1}"
    return key


def _ordered(ent, widget: Widget, rows: list[tuple]) -> list[tuple]:
    """Picklist groups in the picklist's order; others by key; blanks last. Quarters merge here."""
    merged: dict = {}
    for key, value in rows:
        merged[key] = value if key not in merged else _plus(merged[key], value, widget)
    rows = list(merged.items())
    fld = ent.fields.get(widget.group_by)
    if fld is not None and fld.type_name == "picklist":
        order = {o.value: i for i, o in enumerate(fld.options)}
        if widget.type == "funnel":   # every stage, in order, even those with nothing
            present = dict(rows)
            return [(o.value, present.get(o.value, 0 if widget.aggregate == "count" else None)) for o in fld.options]
        return sorted(rows, key=lambda r: (r[0] is None, order.get(r[0], len(order))))
    if widget.bucket is not None:   # time runs left to right
        return sorted(rows, key=lambda r: (r[0] is None, str(r[0])))
    return sorted(rows, key=lambda r: (r[0] is None, -(r[1] or 0), str(r[0])))   # biggest first


def _plus(a, b, widget: Widget):
    if widget.aggregate in ("count", "sum"):
        return (a or 0) + (b or 0)
    if widget.aggregate == "min":
        return min(x for x in (a, b) if x is not None) if a is not None or b is not None else None
    if widget.aggregate == "max":
        return max(x for x in (a, b) if x is not None) if a is not None or b is not None else None
    return a   # averages of a merged quarter are not exact; buckets other than quarter never merge


def _labels(svc, conn, ent, widget: Widget, keys: list, lang: str) -> dict:
    fld = ent.fields.get(widget.group_by)
    if fld is not None and fld.type_name == "picklist":
        return {o.value: o.label.get(lang) for o in fld.options}
    target = "user" if widget.group_by == "owner_id" else (fld.target if fld is not None else None)
    if target:
        other = svc.model.entity(target)
        table = svc.table(target)
        title = other.title if other.title in table.c else "id"
        ids = [k for k in keys if k is not None]
        if not ids:
            return {}
        rows = conn.execute(sa.select(table.c.id, table.c[title]).where(table.c.id.in_(ids))).all()
        return {rid: str(text) for rid, text in rows}
    if fld is not None and fld.type_name == "boolean":
        return {True: "Yes" if lang == "en" else "是", False: "No" if lang == "en" else "否"}
    return {}


def _default_label(key: Any) -> str:
    return "(blank)" if key is None else str(key)


__all__ = ["AGGREGATES", "BUCKETS", "TYPES", "Dashboard", "Result", "Widget", "compile_dashboards", "compute"]
