"""Dashboards: declared in metadata, computed in SQL over what the viewer may see, drawn as SVG."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from engine.dashboards import compute
from engine.dashboards.svg import render
from engine.metadata import MetadataError
from engine.security.permissions import access_for
from engine.security.tokens import create_token
from engine.storage.records import Context

SYS = Context(system=True)


def _deals(rt):
    boss = rt.records.create("user", {"name": "Boss", "email": "boss@example.com", "role": "admin"}, context=SYS)
    ann = rt.records.create("user", {"name": "Ann", "email": "ann@example.com", "role": "sales", "team": "north"},
                            context=SYS)
    bob = rt.records.create("user", {"name": "Bob <script>alert(1)</script>", "email": "bob@example.com",
                                     "role": "sales", "team": "south"}, context=SYS)
    acc = rt.records.create("account", {"name": "Acme"}, context=SYS)
    close = date(2030, 1, 15)
    rows = [(ann, "0.10", "prospecting", close), (ann, "0.20", "proposal", close), (bob, "5.00", "proposal", close),
            (bob, "7.00", "won", close), (ann, "3.00", "won", close + timedelta(days=31))]
    for i, (owner, amount, stage, when) in enumerate(rows):
        rt.records.create("opportunity", {"name": f"D{i}", "account": acc["id"], "amount": amount, "stage": stage,
                                          "close_date": when, "owner_id": owner["id"]}, context=SYS)
    return boss, ann, bob


def test_widgets_are_computed_in_sql_exactly(crm):
    _, ann, bob = _deals(crm)
    sales = crm.extensions["dashboards"]["sales"]
    assert compute(crm.records, sales.widget("open_pipeline")).value == Decimal("5.30")   # 0.10 + 0.20 + 5.00
    assert compute(crm.records, sales.widget("open_deals")).value == 3
    funnel = compute(crm.records, sales.widget("pipeline_funnel"), lang="zh").groups
    assert [(k, label) for k, label, _ in funnel][:3] == [("prospecting", "初步接洽"), ("qualification", "需求确认"),
                                                          ("proposal", "方案报价")]
    assert dict((k, v) for k, _, v in funnel) == {"prospecting": Decimal("0.10"), "qualification": None,
                                                   "proposal": Decimal("5.20"), "negotiation": None,
                                                   "won": Decimal("10.00"), "lost": None}
    months = compute(crm.records, sales.widget("won_by_month")).groups
    assert [(k, v) for k, _, v in months] == [("2030-01", Decimal("7.00")), ("2030-02", Decimal("3.00"))]
    owners = compute(crm.records, sales.widget("deals_by_owner")).groups
    assert [(label, v) for _, label, v in owners] == [("Ann", 2), ("Bob <script>alert(1)</script>", 1)]


def test_a_viewer_sees_figures_over_their_own_records_only(crm):
    _, ann, _ = _deals(crm)
    access = access_for(crm.records, ann["id"])
    widget = crm.extensions["dashboards"]["sales"].widget("open_pipeline")
    assert compute(crm.records, widget, access=access).value == Decimal("0.30")   # Ann's team only
    service = crm.records.create("user", {"name": "Sue", "email": "sue@example.com", "role": "service"}, context=SYS)
    from engine.storage.errors import PermissionDenied

    with pytest.raises(PermissionDenied):
        compute(crm.records, widget, access=access_for(crm.records, service["id"]))


def test_charts_are_svg_with_every_text_escaped(crm):
    _deals(crm)
    svg = render(compute(crm.records, crm.extensions["dashboards"]["sales"].widget("deals_by_owner")))
    assert svg.startswith("<svg") and "<script>" not in svg and "&lt;script&gt;" in svg
    import xml.dom.minidom

    xml.dom.minidom.parseString(svg)   # well-formed
    for name in ("pipeline_funnel", "won_by_month", "open_pipeline"):
        xml.dom.minidom.parseString(render(compute(crm.records, crm.extensions["dashboards"]["sales"].widget(name))))


def test_the_api_serves_dashboards_to_who_may_see_them(crm):
    from engine.app import create_app

    boss, ann, _ = _deals(crm)
    client = create_app(runtime=crm).test_client()

    def headers(user):
        return {"Authorization": f"Bearer {create_token(crm.records, user['id'], 't')[1]}"}

    listed = client.get("/api/v1/_dashboards", headers=headers(boss)).json["data"]
    assert {d["name"] for d in listed} == {"sales", "service", "receivables"}
    as_ann = client.get("/api/v1/_dashboards", headers=headers(ann)).json["data"]
    assert [d["name"] for d in as_ann] == ["sales", "receivables"]   # sales reps may not read cases
    body = client.get("/api/v1/_dashboards/sales", headers=headers(ann)).json
    assert {w["name"]: w.get("value") for w in body["widgets"]}["open_pipeline"] == "0.30"
    svg = client.get("/api/v1/_dashboards/sales/pipeline_funnel.svg?lang=zh", headers=headers(ann))
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml" and "方案报价" in svg.get_data(as_text=True)
    assert client.get("/api/v1/_dashboards/nope", headers=headers(ann)).status_code == 404
    assert client.get("/api/v1/_dashboards/sales").status_code == 401


def test_dashboard_errors_name_the_file_and_line(make_runtime, write_tree):
    site = write_tree("site", {"d.yaml": """
        dashboard: broken
        widgets:
          - {name: a, type: bar, entity: opportunity, group_by: name}
          - {name: b, type: number, entity: opportunity, aggregate: sum, field: stage}
          - {name: c, type: line, entity: opportunity, group_by: close_date}
          - {name: d, type: number, entity: opportunity, where: "REGEX(name, 'x')"}
        """})
    with pytest.raises(MetadataError) as info:
        make_runtime(site_dir=site, migrate=False)
    text = str(info.value)
    assert "d.yaml:3" in text and "group_by" in text
    assert "d.yaml:4" in text and "sum needs a stored number field" in text
    assert "d.yaml:5" in text and "needs bucket" in text
    assert "d.yaml:6" in text and "no sql" in text.lower()
