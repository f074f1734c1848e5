"""Dashboards on the web UI: the screen of one dashboard, its entries in the navigation and its
panel on the home page (the dashboards the user may see: those with a widget on an entity they read)."""

from __future__ import annotations

from flask import Blueprint, abort, g, render_template, url_for
from markupsafe import Markup, escape

from engine.plugins import NavEntry, Panel
from engine.ui.common import runtime
from engine.ui.extend import ui_routes
from engine.ui.i18n import current_lang
from engine.ui.i18n import translate as _

from . import compute
from .plugin import dashboards_of
from .svg import money_of, render

GROUP = "Dashboards"   # the navigation's menu, as the UI's catalogs translate it


def blueprint() -> Blueprint:
    bp = ui_routes("dashboards_ui", __name__)
    bp.add_url_rule("/ui/dashboards/<name>", "dashboard", dashboard_page, methods=["GET"])
    return bp


def visible(dashboards: dict, access) -> list:
    """The dashboards with at least one widget on an entity ``access`` may read."""
    return [d for d in dashboards.values() if any(access.can(w.entity, "read") for w in d.widgets)]


def nav_entries(dashboards: dict, access) -> list[NavEntry]:
    return [NavEntry(key=f"dashboard:{d.name}", label=dict(d.label.texts), group=GROUP,
                     url=url_for("dashboards_ui.dashboard", name=d.name)) for d in visible(dashboards, access)]


def home_panels(dashboards: dict, access) -> list[Panel]:
    shown = visible(dashboards, access)
    if not shown:
        return []
    lang = current_lang()
    items = "".join(f'<li><a href="{escape(url_for("dashboards_ui.dashboard", name=d.name))}">{escape(d.label.get(lang))}</a></li>'
                    for d in shown)
    return [Panel(key="dashboards", title=_("Dashboards"), html=Markup(f'<ul class="list-unstyled mb-0">{items}</ul>'))]


def dashboard_page(name: str):
    dashboard = dashboards_of(runtime()).get(name)
    if dashboard is None:
        abort(404)
    widgets = [w for w in dashboard.widgets if g.access.can(w.entity, "read")]
    if not widgets:
        abort(403)
    charts = []
    for widget in widgets:
        result = compute(runtime().records, widget, access=g.access, lang=current_lang())
        money = money_of(runtime().model, widget, runtime().settings.currency, current_lang())
        charts.append({"widget": widget, "svg": Markup(render(result, money)), "type": widget.type})   # render() escapes
    return render_template("dashboards/dashboard.html", dashboard=dashboard, charts=charts)
