"""Titles from formulas, ranked search, filter labels and bulk update of the list screen."""

from __future__ import annotations

from engine.storage.records import Context
from engine.storage.search import search
from engine.storage.titles import title_of

SYSTEM = Context(system=True)


def test_title_formula_gives_full_names_found_by_search(crm):
    ent = crm.model.entity("contact")
    assert ent.title == "display_name" and ent.fields["display_name"].prop("searchable")
    made = crm.records.create("contact", {"first_name": "Andrew", "last_name": "Fuller"}, context=SYSTEM)
    crm.records.create("contact", {"first_name": "Nancy", "last_name": "Andrew Fullerton-Davolio"}, context=SYSTEM)
    only_last = crm.records.create("contact", {"last_name": "Leverling"}, context=SYSTEM)
    assert made["display_name"] == "Andrew Fuller" and title_of(ent, made) == "Andrew Fuller"
    assert only_last["display_name"] == "Leverling"
    hits = [(e, r["id"]) for e, r in search(crm.records, "andrew fuller", SYSTEM) if e == "contact"]
    assert hits[0] == ("contact", made["id"]) and len(hits) == 2   # the exact title first
    updated = crm.records.update("contact", made["id"], {"first_name": "Andy"}, context=SYSTEM)
    assert updated["display_name"] == "Andy Fuller"
    lead = crm.records.create("lead", {"first_name": "Janet", "last_name": "King", "company": "Acme"}, context=SYSTEM)
    assert lead["display_name"] == "Janet King"
