"""The data-quality page of an entity (``/ui/quality/<entity>``) and its navigation entries: one per
entity the user may check (admins; roles with read and import on it), under the "Data" menu."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, abort, g, render_template, url_for

from engine.plugins import NavEntry
from engine.storage.titles import title_of
from engine.ui.common import runtime
from engine.ui.extend import ui_routes
from engine.ui.i18n import current_lang
from engine.ui.present import column

from .service import may_check, quality_report

GROUP = "Data"   # the navigation's menu (shared with imports), as the UI's catalogs translate it


def blueprint() -> Blueprint:
    bp = ui_routes("quality_ui", __name__)
    bp.add_url_rule("/ui/quality/<entity>", "page", quality_page, methods=["GET"])
    return bp


def nav_entries(runtime_, access) -> list[NavEntry]:
    model = runtime_.model
    return [NavEntry(key=f"quality:{name}", label=dict(ent.plural.texts), group=GROUP, order=90,
                     url=url_for("quality_ui.page", entity=name))
            for name, ent in sorted(model.entities.items()) if not ent.name.startswith("_") and name != "user"
            and may_check(access, name)]


def quality_page(entity: str):
    rt = runtime()
    if entity not in rt.model.entities or not g.access.can(entity, "read") or not may_check(g.access, entity):
        abort(404)
    ent = rt.model.entity(entity)
    report = quality_report(rt, ent, g.access, g.context)
    lang = current_lang()
    list_url = url_for("ui.list", entity=ent.name)

    def label(name: str) -> str:
        col = column(ent, name)
        return col.label(lang) if col is not None else name

    def where(condition: str) -> str:
        return f"{list_url}?{urlencode({'where': condition})}"

    def ids_link(ids: list[int]) -> str | None:
        return where(f"id IN ({', '.join(map(str, ids))})") if ids else None

    fills = sorted(report.fills, key=lambda f: (f.percent, f.field))
    groups = None
    if report.duplicates is not None:
        groups = []
        for group in report.duplicates:
            found = rt.records.fetch_many(ent.name, group.get("ids") or (), context=g.context)
            groups.append({"rule": group.get("rule") or "", "link": ids_link(sorted(found)),
                           "records": [(rid, title_of(ent, rec), url_for("ui.record", entity=ent.name, record_id=rid))
                                       for rid, rec in sorted(found.items())]})
    return render_template(
        "quality/page.html", ent=ent, report=report, label=label, list_url=list_url,
        fills=[{"name": f.field, "label": label(f.field), "filled": f.filled, "percent": f.percent,
                "empty_link": where(f"ISBLANK({f.field})") if f.filled < f.total else None} for f in fills],
        invalid=[{"name": i.field, "label": label(i.field), "checked": i.checked, "invalid": i.invalid,
                  "unnormalised": i.unnormalised, "reasons": i.reasons, "invalid_link": ids_link(i.invalid_ids),
                  "unnormalised_link": ids_link(i.unnormalised_ids)} for i in report.invalid],
        groups=groups)
