"""The record page (engine/ui/record_page) through Flask's test client: the header's highlights and
owner, the workflow's path, the composer's quick actions (a call, a note, an e-mail) landing in the
timeline, the timeline by day with field changes, related lists as cards, inline editing with its
validation errors, conflicts and field permissions, an ended session during an inline edit, and the
metadata checks of ``highlights`` and ``quick_actions``. The browser tests are in tests/ui/."""

from __future__ import annotations

import html
import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.ui_kit")
from .ui_kit import SYSTEM, make_site, text  # noqa: E402

pytest_plugins = ("tests.ui_kit",)


@pytest.fixture
def site(crm):
    """A site with no demo data (quicker): each test makes the records it looks at."""
    return make_site(crm, seeded=False)

HX = {"HX-Request": "true"}


def account_of(site) -> dict:
    return site.records.create("account", {"name": "Zephyr Analytics", "industry": "technology",
                                           "phone": "+1 415 555 2671"}, context=SYSTEM)


def opportunity_of(site, **values) -> dict:
    account = account_of(site)
    return site.records.create("opportunity", {"name": "Platform deal", "account": account["id"],
                                               "close_date": date.today() + timedelta(days=30), **values},
                               context=SYSTEM)


def post_hx(browser, url: str, data: dict):
    return browser.post(url, data, headers=HX)


def field_block(page: str, name: str) -> str:
    found = re.search(rf'<div class="col record-field[^"]*" data-field="{name}" id="field-{name}">(.*?)</dd>', page, re.S)
    assert found, name
    return found.group(1)


# -- header, path, related ---------------------------------------------------------------------------

def test_the_header_shows_the_highlights_the_owner_and_the_actions(site, admin):
    opp = opportunity_of(site, amount=Decimal("12500"), owner_id=site.sales["id"])
    page = text(admin.get(f"/ui/opportunity/{opp['id']}"))
    heads = re.findall(r'data-highlight="([^"]+)"', page)
    assert heads == ["account", "stage", "amount", "close_date", "probability", "owner_id"]
    block = re.search(r'data-highlight="amount">(.*?)</div>', page, re.S).group(1)
    assert "$12,500.00" in block
    assert re.search(r'id="record-owner">.*Sam Sales', page, re.S)
    assert 'id="edit"' in page and 'data-transition="qualify"' in page


def test_the_path_shows_the_states_and_takes_the_transition_of_a_clicked_one(site, admin):
    opp = opportunity_of(site)
    page = text(admin.get(f"/ui/opportunity/{opp['id']}"))
    states = re.findall(r'<li class="path-step[^"]*" data-state="([^"]+)"', page)
    assert states == ["prospecting", "qualification", "proposal", "negotiation", "won", "lost"]
    assert re.search(r'class="path-step current" data-state="prospecting" aria-current="step"', page)
    clickable = re.findall(r'data-path-transition="([^"]+)"', page)
    assert clickable == ["qualify", "propose", "lose"]   # win needs proposal or negotiation first
    # "lose" requires a field: its step opens the transition form; "qualify" posts at once
    assert f'href="/ui/opportunity/{opp["id"]}/transition/lose" data-path-transition="lose"' in page
    r = admin.post(f"/ui/opportunity/{opp['id']}/transition/qualify", {"version": "1"})
    assert r.status_code == 302
    page = text(admin.get(f"/ui/opportunity/{opp['id']}"))
    assert re.search(r'class="path-step done" data-state="prospecting"', page)
    assert re.search(r'class="path-step current" data-state="qualification"', page)


def test_an_entity_without_a_workflow_has_no_path(site, admin):
    account = account_of(site)
    page = text(admin.get(f"/ui/account/{account['id']}"))
    assert 'id="path"' not in page


def test_related_lists_are_cards_with_the_count_and_the_five_newest(site, admin):
    account = account_of(site)
    for i in range(7):
        site.records.create("contact", {"last_name": f"Child {i}", "account": account["id"]}, context=SYSTEM)
    page = text(admin.get(f"/ui/account/{account['id']}"))
    card = re.search(r'<section class="card h-100 related" data-entity="contact">(.*?)</section>', page, re.S).group(1)
    assert re.search(r'related-count">7<', card)
    assert len(re.findall(r'href="/ui/contact/\d+"', card)) == 5
    assert "Child 6" in card and "Child 1" not in card   # newest first
    link = html.unescape(re.search(r'class="small view-all" href="([^"]+)"', card).group(1))
    assert link == f"/ui/contact?where=account+%3D+{account['id']}"


def test_empty_fields_are_marked_to_be_collapsed(site, admin):
    account = account_of(site)
    page = text(admin.get(f"/ui/account/{account['id']}"))
    assert 'class="col record-field is-empty" data-field="website"' in page
    assert 'class="col record-field" data-field="phone"' in page
    assert re.search(r'Show empty fields \(\d+\)', page)


# -- composer and timeline --------------------------------------------------------------------------

def test_logging_a_call_puts_it_in_the_timeline(site):
    account = account_of(site)
    sales = site.browser(site.sales)
    site.records.update("account", account["id"], {"owner_id": site.sales["id"]}, context=SYSTEM)
    page = text(sales.get(f"/ui/account/{account['id']}"))
    assert re.findall(r'data-quick-action="([^"]+)"', page) == ["call", "task", "note", "email"]
    r = post_hx(sales, f"/ui/account/{account['id']}/_compose/call",
                {"subject": "Discussed <b>renewal</b>", "call_result": "connected", "description": "Wants a quote."})
    assert r.status_code == 200, text(r)[-2000:]
    body = text(r)
    assert 'id="composer-done"' in body and 'hx-swap-oob="true"' in body
    assert "Discussed &lt;b&gt;renewal&lt;/b&gt;" in body and "<b>renewal" not in body
    made = [a for a in site.records.query("activity", limit=10_000)
            if a["related_to"] and a["related_to"].id == account["id"] and a["related_to"].entity == "account"]
    assert [(a["type"], a["status"], a["call_result"], a["owner_id"]) for a in made] == [
        ("call", "completed", "connected", site.sales["id"])]
    page = text(sales.get(f"/ui/account/{account['id']}"))
    timeline = re.search(r'<div id="timeline"[^>]*>(.*?)</div>\s*</div></section>', page, re.S).group(1)
    assert "Today" in timeline and 'data-kind="call"' in timeline and "Wants a quote." in timeline


def test_the_composer_shows_errors_beside_the_inputs_and_keeps_what_was_typed(site, admin):
    account = account_of(site)
    r = post_hx(admin, f"/ui/account/{account['id']}/_compose/call", {"subject": "", "description": "Kept text"})
    assert r.status_code == 422
    body = text(r)
    assert re.search(r'data-error-for="subject">[^<]*required', body)
    assert "Kept text" in body and 'id="tab-call" data-bs-toggle="tab"' in body
    r = post_hx(admin, f"/ui/account/{account['id']}/_compose/email", {"to": "not an address", "subject": "Hi"})
    assert r.status_code == 422
    assert 'data-error-for="to"' in text(r) and 'data-error-for="description"' in text(r)
    assert not [a for a in site.records.query("activity", limit=10_000) if a["related_to"] and a["related_to"].id == account["id"]]
    # an action the entity does not declare, or a role that may not create the target
    assert post_hx(admin, f"/ui/account/{account['id']}/_compose/meeting", {"subject": "x"}).status_code == 404


def test_a_note_and_an_email_land_in_the_timeline_and_the_email_is_sent(site, admin):
    contact = site.records.create("contact", {"last_name": "Lovelace", "email": "ada@example.org"}, context=SYSTEM)
    page = text(admin.get(f"/ui/contact/{contact['id']}"))
    assert 'id="q-email-to" name="to" type="text" inputmode="email" value="ada@example.org"' in page
    r = post_hx(admin, f"/ui/contact/{contact['id']}/_compose/note", {"body": "Prefers e-mail.\nNo calls."})
    assert r.status_code == 200, text(r)[-1500:]
    note = site.records.query("note", limit=10)[-1]
    assert (note["body"], note["related_to"].entity, note["related_to"].id) == ("Prefers e-mail.\nNo calls.", "contact", contact["id"])
    r = post_hx(admin, f"/ui/contact/{contact['id']}/_compose/email",
                {"to": "ada@example.org", "subject": "Our offer", "description": "Hello Ada,\nhere it is."})
    assert r.status_code == 200, text(r)[-1500:]
    mail = [a for a in site.records.query("activity", limit=10_000) if a["type"] == "email"]
    assert [(m["subject"], m["status"]) for m in mail] == [("Our offer", "completed")]
    assert "ada@example.org" in mail[0]["description"]
    outbox = Path(site.rt.settings.mail_target.removeprefix("file://"))
    sent = [p.read_text() for p in outbox.glob("*.eml")]
    assert any("Subject: Our offer" in m and "To: ada@example.org" in m for m in sent)
    timeline = text(admin.get(f"/ui/contact/{contact['id']}/_timeline"))
    assert timeline.index('data-kind="email"') < timeline.index('data-kind="note"')   # newest first


def test_the_timeline_shows_field_changes_and_only_what_the_user_may_read(site, admin):
    opp = opportunity_of(site, amount=Decimal(100))
    site.records.update("opportunity", opp["id"], {"amount": Decimal(250)}, context=SYSTEM)
    site.records.create("activity", {"subject": "Secret call", "type": "call",
                                     "related_to": {"entity": "opportunity", "id": opp["id"]}}, context=SYSTEM)
    timeline = text(admin.get(f"/ui/opportunity/{opp['id']}/_timeline"))
    assert 'data-kind="change"' in timeline and "Amount: $100.00 → $250.00" in timeline
    assert "Secret call" in timeline
    # a sales user sees only their own activities (scope own)
    site.records.update("opportunity", opp["id"], {"owner_id": site.sales["id"]}, context=SYSTEM)
    timeline = text(site.browser(site.sales).get(f"/ui/opportunity/{opp['id']}/_timeline"))
    assert "Secret call" not in timeline and "Amount: $100.00" in timeline


# -- inline editing ---------------------------------------------------------------------------------

def test_an_inline_edit_saves_one_field_or_shows_its_error_beside_it(site, admin):
    opp = opportunity_of(site, amount=Decimal(100))
    page = text(admin.get(f"/ui/opportunity/{opp['id']}"))
    assert 'data-edit="amount"' in field_block(page, "amount")
    assert 'data-edit="expected_revenue"' not in page   # a formula is not edited
    editor = admin.get(f"/ui/opportunity/{opp['id']}/_field/amount/edit?version=1&loaded=100.00", headers=HX)
    assert editor.status_code == 200 and 'name="amount"' in text(editor)
    r = post_hx(admin, f"/ui/opportunity/{opp['id']}/_field/amount", {"amount": "-5", "version": "1", "_loaded": "100.00"})
    assert r.status_code == 422
    assert re.search(r'data-error-for="amount">[^<]+', text(r)) and 'value="-5"' in text(r)
    assert site.records.get("opportunity", opp["id"])["amount"] == Decimal(100)
    r = post_hx(admin, f"/ui/opportunity/{opp['id']}/_field/amount", {"amount": "300", "version": "1", "_loaded": "100.00"})
    assert r.status_code == 200 and "$300.00" in text(r) and "just-saved" in text(r)
    assert site.records.get("opportunity", opp["id"])["amount"] == Decimal(300)


def test_an_inline_edit_after_someone_else_changed_the_field_is_a_conflict_with_both_values(site, admin):
    opp = opportunity_of(site, next_step="Call back")
    site.records.update("opportunity", opp["id"], {"next_step": "Theirs: send pricing"}, context=SYSTEM)
    r = post_hx(admin, f"/ui/opportunity/{opp['id']}/_field/next_step",
                {"next_step": "Mine: book demo", "version": "1", "_loaded": "Call back"})
    assert r.status_code == 409
    body = text(r)
    assert re.search(r'class="theirs">Theirs: send pricing<', body) and re.search(r'class="mine">Mine: book demo<', body)
    assert site.records.get("opportunity", opp["id"])["next_step"] == "Theirs: send pricing"
    # "keep mine" sends the version and value the conflict showed: now it saves
    version = re.search(r'name="version" value="(\d+)"', body).group(1)
    r = post_hx(admin, f"/ui/opportunity/{opp['id']}/_field/next_step",
                {"next_step": "Mine: book demo", "version": version, "_loaded": "Theirs: send pricing"})
    assert r.status_code == 200
    assert site.records.get("opportunity", opp["id"])["next_step"] == "Mine: book demo"
    # a change of another field since the page loaded is no conflict: only this field is written
    site.records.update("opportunity", opp["id"], {"competitor": "Acme"}, context=SYSTEM)
    current = site.records.get("opportunity", opp["id"])
    r = post_hx(admin, f"/ui/opportunity/{opp['id']}/_field/next_step",
                {"next_step": "Mine again", "version": str(current["version"] - 1), "_loaded": "Mine: book demo"})
    assert r.status_code == 200
    after = site.records.get("opportunity", opp["id"])
    assert (after["next_step"], after["competitor"]) == ("Mine again", "Acme")


def test_inline_editing_respects_the_permissions(site):
    account = account_of(site)
    service = site.user("svc@example.com", "service")
    browser = site.browser(service)
    page = text(browser.get(f"/ui/account/{account['id']}"))
    assert "data-edit=" not in page   # the service role may not update accounts
    r = post_hx(browser, f"/ui/account/{account['id']}/_field/phone", {"phone": "1", "version": "1", "_loaded": ""})
    assert r.status_code == 403
    assert site.records.get("account", account["id"])["phone"] == account["phone"]


def test_an_ended_session_during_an_inline_edit_says_sign_in_again(site, admin):
    account = account_of(site)
    sessions = site.rt.records.metadata.tables["_crm_session"]
    with site.rt.db.write() as conn:
        conn.execute(sessions.update().values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    r = post_hx(admin, f"/ui/account/{account['id']}/_field/phone", {"phone": "typed", "version": "1", "_loaded": ""})
    assert r.status_code == 401
    assert r.headers["HX-Retarget"] == "#session-alert"
    assert "Sign in again" in text(r) and 'hx-get="/ui/_session" hx-trigger="focus from:window"' in text(r)
    assert site.records.get("account", account["id"])["phone"] == account["phone"]
    # signed in again (another tab): back on the page, it takes the new token and the save goes through
    stale = admin.csrf
    admin.login(site.admin["email"])
    resumed = text(admin.get("/ui/_session", headers=HX))
    token = re.search(r'<meta name="csrf-token" content="([^"]+)" id="csrf-meta" hx-swap-oob="true">', resumed).group(1)
    assert token != stale and '<div id="session-alert" aria-live="polite" hx-swap-oob="true"></div>' in resumed
    r = admin.client.post(f"/ui/account/{account['id']}/_field/website", headers={**HX, "X-CSRF-Token": token},
                          data={"website": "https://typed.example", "version": "1", "_loaded": ""})
    assert r.status_code == 200
    assert site.records.get("account", account["id"])["website"] == "https://typed.example"


def test_the_page_and_its_parts_in_chinese(site, admin):
    opp = opportunity_of(site)
    admin.lang("zh")
    page = text(admin.get(f"/ui/opportunity/{opp['id']}"))
    assert "初步接洽" in page and "记录通话" in page and "时间线" in page
    r = post_hx(admin, f"/ui/opportunity/{opp['id']}/_compose/call", {"subject": ""})
    assert r.status_code == 422 and "记录通话" in text(r)


# -- metadata -----------------------------------------------------------------------------------------

def test_highlights_and_quick_actions_are_checked(tmp_path):
    from engine.metadata import MetadataError
    from engine.plugins import make_plugin_manager
    from engine.runtime import load_model_from
    from engine.settings import SYSTEM_LAYER

    def problems(text: str) -> str:
        (tmp_path / "widget.yaml").write_text(text)
        with pytest.raises(MetadataError) as err:
            load_model_from(make_plugin_manager(entry_point_plugins=False), [("system", SYSTEM_LAYER), ("custom", tmp_path)])
        return "\n".join(f"{p.location.file.rsplit('/', 1)[-1]}:{p.location.line} {p.message}" for p in err.value.problems)

    found = problems("entity: widget\nhighlights: [name, nope]\nquick_actions: [call]\nfields:\n  name: {type: text}\n")
    assert "widget.yaml:2 highlights names unknown field 'nope'" in found
    assert "widget.yaml:3 there is no quick_action 'call'" in found
    assert "widget.yaml" in problems("entity: widget\nquick_actions: [fax]\nfields:\n  name: {type: text}\n")
    # a declared tab whose record cannot point back, and one naming fields its entity lacks
    found = problems("entity: widget\nquick_actions: [ping]\nfields:\n  name: {type: text}\n"
                     "---\nentity: gadget\nfields:\n  label: {type: text}\n  of: {type: lookup, to: gadget}\n"
                     "---\nquick_action: ping\ncreates: gadget\nlink: of\nfields: [label]\n"
                     "---\nquick_action: pong\ncreates: gadget\nlink: of\nfields: [label, nope]\n")
    assert "widget.yaml:2 quick action 'ping' creates gadget, whose of cannot point to widget" in found
    assert "widget.yaml:19 quick_action pong: gadget has no field 'nope'" in found


# -- the hooks: crm_record_timeline, crm_send_mail ----------------------------------------------------

class Reporter:
    """A plugin adding an event to every account's timeline, and a mail service that is down."""

    @staticmethod
    def crm_record_timeline(runtime, entity, record, access):
        from engine.plugins import TimelineEntry

        if entity.name != "account":
            return []
        return [TimelineEntry(at=datetime.now(timezone.utc) - timedelta(days=3), kind="approval",
                              text="Approved <by> the board", url="/ui/approvals")]

    @staticmethod
    def crm_send_mail(runtime, to, subject, body, key):
        raise OSError("mail server unreachable")


@pytest.fixture
def reported(settings):
    from engine.plugins import hookimpl
    from engine.runtime import Runtime

    class Plugin:
        crm_record_timeline = hookimpl(Reporter.crm_record_timeline)
        crm_send_mail = hookimpl(tryfirst=True)(Reporter.crm_send_mail)

    rt = Runtime.boot(settings, extra_plugins=(Plugin(),))
    rt.migrate()
    yield make_site(rt, seeded=False)
    rt.close()


def test_plugins_add_to_the_timeline_and_a_failed_email_is_not_logged(reported):
    site = reported
    admin = site.browser(site.admin)
    account = account_of(site)
    timeline = text(admin.get(f"/ui/account/{account['id']}/_timeline"))
    assert 'data-kind="approval"' in timeline and "Approved &lt;by&gt; the board" in timeline
    r = post_hx(admin, f"/ui/account/{account['id']}/_compose/email",
                {"to": "ada@example.org", "subject": "Offer", "description": "Hello"})
    assert r.status_code == 422 and "The e-mail could not be sent: mail server unreachable" in text(r)
    assert not site.records.query("activity", limit=10)   # nothing half-done


def test_approvals_show_in_the_timeline(site, admin):
    account = account_of(site)
    contract = site.records.create("contract", {"name": "Big deal", "account": account["id"], "start_date": "2099-01-01",
                                                "contract_value": 250000, "owner_id": site.admin["id"]}, context=SYSTEM)
    treasurer = site.user("fin@example.com", "finance", name="Fiona Finance")
    r = admin.post(f"/ui/approvals/contract/{contract['id']}/submit", {})
    assert r.status_code == 302
    r = site.browser(treasurer).post(f"/ui/approvals/contract/{contract['id']}/reject", {"comment": "payment <terms>"})
    assert r.status_code == 302
    timeline = text(admin.get(f"/ui/contract/{contract['id']}/_timeline"))
    assert "Submitted for approval: Large contract approval" in timeline
    assert "Rejected: Large contract approval · “payment &lt;terms&gt;”" in timeline and "Fiona Finance" in timeline
