"""Duplicates on the web UI: a navigation entry per entity with rules the user may read, and the scan
page ``/ui/duplicates/<entity>``: the groups of likely duplicates among the records the user may read
(which rule, how alike, a link to each record) with a Merge link per group for who may update."""

from __future__ import annotations

from flask import Blueprint, abort, g, render_template, request, url_for

from engine.fields import whole_number
from engine.plugins import NavEntry
from engine.ui.common import runtime
from engine.ui.extend import ui_routes

from .plugin import service_of
from .scan import duplicate_groups, with_titles

GROUP = "Data"   # the navigation's menu (shared with imports), as the UI's catalogs translate it
PAGE = 50


def blueprint() -> Blueprint:
    bp = ui_routes("duplicates_ui", __name__)
    bp.add_url_rule("/ui/duplicates/<entity>", "groups", groups_page, methods=["GET"])
    return bp


def nav_entries(service, access) -> list[NavEntry]:
    out = []
    for name in service.entities:
        ent = service.runtime.model.entity(name)
        if access.can(name, "read"):
            out.append(NavEntry(key=f"duplicates:{name}", group=GROUP, order=60,
                                label={"en": f"Duplicate {ent.plural.get('en').lower()}", "zh": f"重复{ent.plural.get('zh')}"},
                                url=url_for("duplicates_ui.groups", entity=name)))
    return out


def groups_page(entity: str):
    rt = runtime()
    service = service_of(rt)
    rules = service.rules_of(entity)
    if entity not in rt.model.entities or not rules or not g.access.can(entity, "read"):
        abort(404)
    ent = rt.model.entity(entity)
    rule = request.args.get("rule") or None
    if rule is not None and rule not in {r.name for r in rules}:
        abort(404)
    offset = max(whole_number(request.args.get("offset", "0")) or 0, 0)
    groups = duplicate_groups(rt, entity, g.access, rule=rule)
    page = with_titles(rt, entity, groups[offset:offset + PAGE], g.access)
    labels = {r.name: r.label for r in rules}
    actions = {r.name: r.action for r in rules}
    base = url_for("ui.list", entity=entity)
    merge = g.access.can(entity, "update") and g.access.can(entity, "delete")
    return render_template("duplicates/groups.html", ent=ent, groups=page, total=len(groups), offset=offset,
                           page_size=PAGE, rules=rules, rule=rule, labels=labels, actions=actions,
                           merge_url=(lambda ids: f"{base}/merge?ids={','.join(map(str, ids))}") if merge else None)
