"""Server-side tests of the web UI's record forms through Flask's test client: errors beside their
fields with every typed value kept, conflicts that lose nothing, conditional fields evaluated by the
server, and a round trip of every entity's forms (a form sent back as rendered changes nothing and
never fails on the server).
"""

from __future__ import annotations

import html
import re
from datetime import date, timedelta

import pytest

pytest.register_assert_rewrite("tests.ui_kit")   # before its import: helpers assert too
from .ui_kit import SYSTEM, esc, form_fields, input_value, query_of, selected_option, text, textarea_value  # noqa: E402

pytest_plugins = ("tests.ui_kit",)   # the fixtures site and admin

TYPED = {"name": "", "type": "upsell", "lead_source": "web", "stage": "prospecting", "probability": "20",
         "amount": "12345.50", "forecast_category": "best_case", "next_step": "Call <b>Bob</b> & co",
         "description": "Line 1\nLine \"2\" <i>", "competitor": "Acme 'R' Us"}


def errors_of(page: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, message in re.findall(r'data-error-for="([^"]*)">([^<]*)<', page):
        found.setdefault(name, []).append(html.unescape(message))
    return found


def shown_values(page: str) -> dict[str, str]:
    """What the opportunity form shows for each typed field."""
    out = {}
    for name in TYPED:
        for read in (input_value, textarea_value, selected_option):
            value = read(page, name)
            if value is not None:
                out[name] = value
                break
    return out


def _opportunity_form(site) -> dict[str, str]:
    account = site.records.query("account", order_by=("id",), limit=1)[0]
    contact = site.records.query("contact", order_by=("id",), limit=1)[0]
    return {**TYPED, "account": str(account["id"]), "contact": str(contact["id"]), "owner_id": str(site.sales["id"]),
            "close_date": (date.today() + timedelta(days=40)).isoformat()}


def test_a_missing_required_field_is_named_beside_it_and_every_typed_value_stays(site, admin):
    before = len(site.records.query("opportunity", limit=10_000))
    typed = _opportunity_form(site)
    r = admin.post("/ui/opportunity/new", typed)
    page = text(r)
    assert r.status_code == 422
    assert errors_of(page) == {"name": ["is required"]}
    assert 'id="field-errors-summary"' in page
    assert re.search(r'id="f-name" name="name" value=""', page) and 'class="form-control is-invalid" id="f-name"' in page
    shown = shown_values(page)
    assert shown == {k: v for k, v in typed.items() if k in TYPED}, shown
    for lookup in ("account", "contact", "owner_id"):   # lookups keep the id and show the title
        assert input_value(page, lookup) == typed[lookup]
    account = site.records.get("account", int(typed["account"]))
    assert f'id="f-account" autocomplete="off" value="{esc(account["name"])}"' in page
    assert f'id="f-owner_id" autocomplete="off" value="{esc(site.sales["name"])}"' in page
    assert len(site.records.query("opportunity", limit=10_000)) == before
    # fixing it creates the record and goes to its page
    r = admin.post("/ui/opportunity/new", {**typed, "name": "Fixed deal"})
    assert r.status_code == 302 and re.fullmatch(r"/ui/opportunity/\d+", r.location), r.location
    made = site.records.get("opportunity", int(r.location.rsplit("/", 1)[1]))
    assert (made["name"], str(made["amount"]), made["next_step"], made["description"], made["competitor"]) == \
           ("Fixed deal", "12345.50", typed["next_step"], typed["description"], typed["competitor"])
    assert made["account"] == int(typed["account"]) and made["stage"] == "prospecting"
    assert made["owner_id"] == site.sales["id"]
    assert "Opportunity created." in text(admin.get(r.location))


def test_several_errors_each_beside_its_field_and_a_rule_message(site, admin):
    typed = {**_opportunity_form(site), "name": "Deal", "amount": "-5", "probability": "lots"}
    r = admin.post("/ui/opportunity/new", typed)
    assert r.status_code == 422
    errors = errors_of(text(r))
    assert errors == {"amount": ["must be at least 0"], "probability": ["'lots' is not a number"]}, errors
    assert input_value(text(r), "probability") == "lots"   # shown back as typed, even when it is not a number
    # a validation rule's message shows beside the field it names
    r = admin.post("/ui/opportunity/new", {**typed, "amount": "5", "probability": "5",
                                           "close_date": (date.today() - timedelta(days=1)).isoformat()})
    assert r.status_code == 422
    assert errors_of(text(r)) == {"close_date": ["Close date cannot be in the past"]}
    # in Chinese, the rule's own Chinese message (opportunity.yaml declares one)
    admin.lang("zh")
    r = admin.post("/ui/opportunity/new", {**typed, "amount": "5", "probability": "5",
                                           "close_date": (date.today() - timedelta(days=1)).isoformat()})
    assert r.status_code == 422
    assert errors_of(text(r)) == {"close_date": ["预计成交日期不能早于今天"]}


def test_an_edit_with_a_stale_version_shows_the_conflict_and_loses_nothing_typed(site, admin):
    typed = _opportunity_form(site)
    made = admin.post("/ui/opportunity/new", {**typed, "name": "Mine"})
    record_id = int(made.location.rsplit("/", 1)[1])
    form = text(admin.get(f"/ui/opportunity/{record_id}/edit"))
    assert input_value(form, "version") == "1"
    site.records.update("opportunity", record_id, {"probability": 55}, context=SYSTEM)   # someone else, meanwhile
    sent = dict(form_fields(form))
    sent.update(name="Renamed by me", amount="999.00", description="my long text\nsecond line")
    r = admin.post(f"/ui/opportunity/{record_id}/edit", sent)
    page = text(r)
    assert r.status_code == 409
    assert re.search(r'id="form-errors">.*changed by someone else', page, re.S)
    assert input_value(page, "name") == "Renamed by me" and input_value(page, "amount") == "999.00"
    assert textarea_value(page, "description") == "my long text\nsecond line"
    after = site.records.get("opportunity", record_id)
    assert (after["name"], after["version"], str(after["probability"])) == ("Mine", 2, "55.00")


def test_saving_again_after_a_conflict_keeps_the_other_users_change(site, admin):
    """The conflict form shows the user's own changes over the record as it is now; saving it
    writes those changes and leaves what the other user changed alone."""
    typed = _opportunity_form(site)
    made = admin.post("/ui/opportunity/new", {**typed, "name": "Shared deal", "next_step": "call them"})
    record_id = int(made.location.rsplit("/", 1)[1])
    form = text(admin.get(f"/ui/opportunity/{record_id}/edit"))
    site.records.update("opportunity", record_id, {"next_step": "meeting on Friday"}, context=SYSTEM)
    sent = dict(form_fields(form))
    sent.update(amount="4321.00")                                  # this user changes the amount only
    page = text(admin.post(f"/ui/opportunity/{record_id}/edit", sent))
    assert input_value(page, "amount") == "4321.00"               # theirs, kept
    assert input_value(page, "next_step") == "meeting on Friday"  # the other user's, shown
    assert input_value(page, "version") == "2"
    again = admin.post(f"/ui/opportunity/{record_id}/edit", dict(form_fields(page)))
    assert again.status_code == 302
    after = site.records.get("opportunity", record_id)
    assert (str(after["amount"]), after["next_step"], after["version"]) == ("4321.00", "meeting on Friday", 3)
    # and without any conflict, a field the user did not touch is never written back
    form = text(admin.get(f"/ui/opportunity/{record_id}/edit"))
    site.records.update("opportunity", record_id, {"next_step": "signed"}, context=SYSTEM)
    sent = dict(form_fields(form))
    sent.update(version="4", name="Shared deal (renamed)")        # as if the version had been refreshed
    assert admin.post(f"/ui/opportunity/{record_id}/edit", sent).status_code == 302
    after = site.records.get("opportunity", record_id)
    assert (after["name"], after["next_step"]) == ("Shared deal (renamed)", "signed")


def test_conditional_fields_are_decided_by_the_server(site, admin):
    lost = admin.post_json("/ui/opportunity/_form_state", {"values": {"stage": "lost"}})
    assert lost.status_code == 200
    assert lost.get_json()["visible"]["lost_reason"] is True and lost.get_json()["required"]["lost_reason"] is True
    open_ = admin.post_json("/ui/opportunity/_form_state", {"values": {"stage": "prospecting"}})
    assert open_.get_json()["visible"]["lost_reason"] is False and open_.get_json()["required"]["lost_reason"] is False
    # an existing record's values count too; what the user typed wins
    opp = site.records.query("opportunity", limit=1)[0]
    state = admin.post_json("/ui/opportunity/_form_state", {"id": opp["id"], "values": {"stage": "lost"}}).get_json()
    assert state["visible"]["lost_reason"] is True
    assert admin.post_json("/ui/opportunity/_form_state", {"id": 999_999, "values": {}}).status_code == 404
    for body in ([], "x", {"values": ["stage"]}, {"values": {"stage": ["lost"], "no_such": 1}}):
        r = admin.post_json("/ui/opportunity/_form_state", body)
        assert r.status_code == 200 and r.get_json()["visible"]["lost_reason"] is False, body
    # the rendered form agrees: hidden until the stage is lost, then shown and marked required
    page = text(admin.get("/ui/opportunity/new"))
    assert 'class="col field d-none" data-field="lost_reason"' in page
    r = admin.post("/ui/opportunity/new", {**_opportunity_form(site), "name": "Lost one", "stage": "lost"})
    page = text(r)
    assert r.status_code == 422 and "lost_reason" in errors_of(page)
    assert 'class="col field" data-field="lost_reason"' in page
    assert re.search(r'data-field="lost_reason">\s*<label[^>]*>[^<]*<span class="text-danger required-mark"', page)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_form_sent_back_as_rendered_changes_nothing_and_never_fails(site, admin, lang):
    """Generated over the model: the edit form of a record, sent back untouched, saves no change;
    the new form, sent back as rendered, is created or refused with errors beside known fields."""
    admin.lang(lang)
    for ent in site.rt.model.entities.values():
        for record in site.records.query(ent.name, order_by=("id",), limit=1):
            before = site.records.get(ent.name, record["id"])
            page = text(admin.get(f"/ui/{ent.name}/{record['id']}/edit"))
            r = admin.post(f"/ui/{ent.name}/{record['id']}/edit", form_fields(page))
            assert r.status_code == 302, (ent.name, r.status_code, errors_of(text(r)), text(r)[-1500:])
            assert site.records.get(ent.name, record["id"]) == before, ent.name
        count = len(site.records.query(ent.name, limit=10_000))
        page = text(admin.get(f"/ui/{ent.name}/new"))
        r = admin.post(f"/ui/{ent.name}/new", form_fields(page))
        assert r.status_code in (302, 422), (ent.name, r.status_code, text(r)[-1500:])
        if r.status_code == 422:
            errors = errors_of(text(r))
            assert errors and all(f'data-field="{name}"' in text(r) for name in errors), (ent.name, errors)
            assert len(site.records.query(ent.name, limit=10_000)) == count
        else:
            assert len(site.records.query(ent.name, limit=10_000)) == count + 1


def test_a_sales_user_cannot_write_what_its_role_makes_read_only(site):
    sales = site.browser(site.sales)
    account = site.records.create("account", {"name": "Ours", "owner_id": site.sales["id"], "annual_revenue": 10},
                                  context=SYSTEM)
    page = text(sales.get(f"/ui/account/{account['id']}/edit"))
    assert 'name="annual_revenue"' not in page and 'id="f-annual_revenue"' in page   # shown, not editable
    sent = dict(form_fields(page), name="Ours renamed", annual_revenue="999999")
    r = sales.post(f"/ui/account/{account['id']}/edit", sent)
    assert r.status_code == 302
    after = site.records.get("account", account["id"])
    assert after["name"] == "Ours renamed" and str(after["annual_revenue"]) == "10.00"
    # pages of entities it may not create or update answer 403 and write nothing
    assert sales.post("/ui/product/new", {"name": "X", "code": "X"}).status_code == 403
    assert sales.get("/ui/product/new").status_code == 403
    product = site.records.query("product", limit=1)[0]
    assert sales.post(f"/ui/product/{product['id']}/edit", {"name": "Y"}).status_code == 403
    assert site.records.get("product", product["id"]) == product
    assert sales.post(f"/ui/account/{account['id']}/delete", {}).status_code == 403   # sales never deletes accounts
    assert site.records.get("account", account["id"])["name"] == "Ours renamed"


def test_delete_from_the_record_page(site, admin):
    lead = site.records.query("lead", order_by=("id",), limit=1)[0]
    r = admin.post(f"/ui/lead/{lead['id']}/delete", {"version": str(lead["version"])})
    assert r.status_code == 302 and r.location == "/ui/lead"
    assert "Deleted." in text(admin.get(r.location))
    assert admin.get(f"/ui/lead/{lead['id']}").status_code == 404
    # an account with opportunities (on_delete: restrict) stays, and the page says why
    opp = site.records.query("opportunity", limit=1)[0]
    account = site.records.get("account", opp["account"])
    r = admin.post(f"/ui/account/{account['id']}/delete", {"version": str(account["version"])})
    assert r.status_code == 302 and r.location == f"/ui/account/{account['id']}"
    assert 'class="alert alert-danger" role="status" id="flash"' in text(admin.get(r.location))
    assert site.records.get("account", account["id"])["version"] == account["version"]


def test_an_untouched_form_keeps_seconds_and_line_breaks_as_stored(site, admin):
    """What a browser does to a form's values (a datetime picker holds minutes; a textarea sends CRLF
    and would drop a leading newline, which the textarea type no longer stores: it keeps indentation)
    must not change the record when the user changed nothing."""
    from datetime import datetime, timezone

    activity = site.records.query("activity", order_by=("id",), limit=1)[0]
    stored = datetime(2026, 12, 5, 14, 30, 45, 123000, tzinfo=timezone.utc)
    text_ = "  indented first line\nsecond line\n\nafter a blank line"
    site.records.update("activity", activity["id"], {"start_at": stored, "description": text_}, context=SYSTEM)
    before = site.records.get("activity", activity["id"])
    page = text(admin.get(f"/ui/activity/{activity['id']}/edit"))
    assert input_value(page, "start_at") == "2026-12-05T14:30"
    assert textarea_value(page, "description") == text_
    r = admin.post(f"/ui/activity/{activity['id']}/edit", form_fields(page))
    assert r.status_code == 302
    assert site.records.get("activity", activity["id"]) == before
    assert "2026-12-05 14:30 UTC" in text(admin.get(f"/ui/activity/{activity['id']}"))
    # a changed minute and typed lines are saved (line breaks as LF, as the API stores them)
    sent = [(k, {"start_at": "2026-12-05T15:00"}.get(k, v)) for k, v in form_fields(page)]
    sent = [(k, "one\r\ntwo" if k == "description" else v) for k, v in sent]
    r = admin.post(f"/ui/activity/{activity['id']}/edit", sent)
    assert r.status_code == 302
    after = site.records.get("activity", activity["id"])
    assert after["start_at"] == datetime(2026, 12, 5, 15, 0, tzinfo=timezone.utc)
    assert after["description"] == "one\ntwo"


@pytest.mark.parametrize("owner", ["as rendered", "blanked"])
def test_a_new_record_belongs_to_its_creator_who_sees_it(site, owner):
    """The owner field of the new form shows the creator; left so or blanked, the record is theirs
    (not nobody's: a team-scoped role would then not see what it just made)."""
    sales = site.browser(site.sales)
    page = text(sales.get("/ui/account/new"))
    assert input_value(page, "owner_id") == str(site.sales["id"])
    assert f'id="f-owner_id" autocomplete="off" value="{esc(site.sales["name"])}"' in page
    sent = [(k, "" if (k == "owner_id" and owner == "blanked") else v) for k, v in form_fields(page) if k != "name"]
    r = sales.post("/ui/account/new", [*sent, ("name", "Made by sales")])
    assert r.status_code == 302, errors_of(text(r))
    made = site.records.get("account", int(r.location.rsplit("/", 1)[1]))
    assert made["owner_id"] == site.sales["id"]
    assert sales.get(r.location).status_code == 200
    assert "Made by sales" in text(sales.get("/ui/account"))


def test_date_times_are_shown_typed_and_filtered_in_the_browsers_time_zone(site, admin):
    """The page's script keeps the browser's zone in the tz cookie; without it (or with nonsense)
    date-times are UTC. Stored values are always UTC."""
    from datetime import datetime, timezone

    account = site.records.query("account", order_by=("id",), limit=1)[0]
    made = site.records.create("activity", {"subject": "Call in Shanghai", "type": "call",
                                            "related_to": f"account:{account['id']}",
                                            "start_at": "2026-03-01T01:30:00+00:00"}, context=SYSTEM)
    field = site.rt.model.entity("activity").fields["start_at"]
    admin.client.set_cookie("tz", "Asia%2FShanghai")
    page = text(admin.get(f"/ui/activity/{made['id']}/edit"))
    assert input_value(page, field.name) == "2026-03-01T09:30"                 # 01:30 UTC is 09:30 in Shanghai
    assert "Asia/Shanghai" in page
    shown = text(admin.get(f"/ui/activity/{made['id']}"))
    assert "2026-03-01 09:30 Asia/Shanghai" in shown
    sent = dict(form_fields(page))
    sent[field.name] = "2026-03-02T08:00"                                        # typed in Shanghai time
    assert admin.post(f"/ui/activity/{made['id']}/edit", sent).status_code == 302
    assert site.records.get("activity", made["id"])[field.name] == datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)
    r = admin.get("/ui/activity", query_string={"ff": field.name, "fo": "gte", "fv": "2026-03-02 08:00"})
    assert "DATETIMEVALUE('2026-03-02 00:00:00')" in query_of(r.location)["where"][0]
    for nonsense in ("Mars/Olympus", "../../etc/passwd", "UTC"):
        admin.client.set_cookie("tz", nonsense)
        assert input_value(text(admin.get(f"/ui/activity/{made['id']}/edit")), field.name) == "2026-03-02T00:00"
    history = text(admin.get(f"/ui/activity/{made['id']}"))
    assert re.search(r"<td>2026-03-01 01:30 UTC</td><td>2026-03-02 00:00 UTC</td>", history), \
        "the field history shows values as the field does (here in UTC: the last cookie was 'UTC')"
