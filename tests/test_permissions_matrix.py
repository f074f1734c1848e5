"""Every role of the base CRM x every entity x every operation, through the API, against the roles
as declared in configs/industries/base/roles.yaml.

The expected answers are read from the YAML itself (not from the engine's compiled roles), and a
record's visibility under a sharing rule is decided by the formula language's Python back end,
while the engine filters in SQL: the two have to agree.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import yaml

from engine import rules
from engine.demo import seed, seed_order
from engine.security.tokens import create_token
from engine.settings import ROOT
from engine.storage.records import Context

ROLES = {doc["role"]: doc for doc in yaml.safe_load_all((ROOT / "configs/industries/base/roles.yaml").read_text())}
SYSTEM = Context(system=True)


def declared(role: str, entity: str) -> tuple[set[str], str, str | None]:
    """(operations, scope, share) of ``role`` on ``entity`` straight from the YAML."""
    doc = ROLES[role]
    grant = (doc.get("entities") or {}).get(entity, doc.get("default")) or {}
    ops = set(grant.get("allow") or ())
    if ops:
        ops.add("read")
    return ops, grant.get("scope", "all"), grant.get("share")


@pytest.fixture
def world(crm):
    """Demo data, all of it owned by the role user, plus one record per entity owned by an outsider."""
    from engine.app import create_app

    seed(crm.records, 2)
    me = crm.records.create("user", {"name": "Me", "email": "me@example.com", "team": "north"}, context=SYSTEM)
    outsider = crm.records.create("user", {"name": "Out", "email": "out@example.com", "team": "south",
                                           "role": "standard"}, context=SYSTEM)
    outside: dict[str, int] = {}
    with crm.db.write() as conn:
        for ent in crm.model.entities.values():
            table = crm.records.table(ent.name)
            conn.execute(table.update().values(owner_id=me["id"]))
            first = conn.execute(sa.select(sa.func.min(table.c.id)).where(table.c.id.not_in([me["id"], outsider["id"]])
                                                                          if ent.name == "user" else sa.true())).scalar()
            if first is not None:
                # the outsider's account is a partner: sales sees it through its sharing rule alone
                extra = {"type": "partner"} if ent.name == "account" else {}
                conn.execute(table.update().where(table.c.id == first).values(owner_id=outsider["id"], **extra))
                outside[ent.name] = first
    app = create_app(runtime=crm)
    return crm, app.test_client(), me, outside


def ordered_for_delete(model) -> list[str]:
    """Children before the entities they point to, so a cascade never removes a record still to test."""
    return [e.name for e in reversed(seed_order(model))] + [e for e in model.entities if e not in
                                                            {x.name for x in seed_order(model)}]


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_entity_and_operation_answers_as_the_role_declares(world, role):
    rt, client, me, outside = world
    with rt.db.write() as conn:
        users = rt.records.table("user")
        conn.execute(users.update().where(users.c.id == me["id"]).values(role=role))
    _, token = create_token(rt.records, me["id"], "matrix")
    auth = {"Authorization": f"Bearer {token}"}
    me_record = rt.records.get("user", me["id"])
    problems = []

    def expect(what, response, allowed, ok_statuses):
        ok = response.status_code in ok_statuses if allowed else response.status_code == 403
        if not ok:
            problems.append(f"{role} {what}: {response.status_code} (allowed={allowed}) {response.data[:200]!r}")

    for ent in rt.model.entities.values():
        ops, scope, share = declared(role, ent.name)
        base = f"/api/v1/{ent.name}"
        mine = rt.records.query(ent.name, where={"owner_id": me["id"]}, limit=1)
        expect(f"list {ent.name}", client.get(f"{base}?limit=5", headers=auth), "read" in ops, {200})
        expect(f"export {ent.name}", client.get(f"{base}/_export", headers=auth), "export" in ops, {200})
        expect(f"create {ent.name}", client.post(base, json={}, headers=auth), "create" in ops, {201, 422})
        expect(f"bulk {ent.name}", client.post(f"{base}/_bulk", json={"records": []}, headers=auth),
               {"import", "create"} <= ops, {200})
        if mine and ent.name != "user" or (ent.name == "user" and mine and mine[0]["id"] != me["id"]):
            rid = mine[0]["id"]
            expect(f"get own {ent.name}", client.get(f"{base}/{rid}", headers=auth), "read" in ops, {200})
            expect(f"history own {ent.name}", client.get(f"{base}/{rid}/history", headers=auth), "read" in ops, {200})
            expect(f"update own {ent.name}", client.patch(f"{base}/{rid}", json={}, headers=auth), "update" in ops, {200})
        if ent.name in outside and "read" in ops:
            record = rt.records.get(ent.name, outside[ent.name])
            visible = scope == "all" or (share is not None and bool(
                rules.compile(share, ent.name, rt.model).evaluate(record, user=me_record)))
            got = client.get(f"{base}/{outside[ent.name]}", headers=auth)
            if got.status_code != (200 if visible else 404):
                problems.append(f"{role} get outsider's {ent.name}: {got.status_code}, visible={visible}")
            listed = client.get(f"{base}?limit=500&fields=id", headers=auth).json["data"]
            if (outside[ent.name] in [r["id"] for r in listed]) != visible:
                problems.append(f"{role} list {ent.name}: outsider's record listed={not visible}")
            patched = client.patch(f"{base}/{outside[ent.name]}", json={}, headers=auth)
            if "update" in ops and patched.status_code != (200 if visible else 404):
                problems.append(f"{role} update outsider's {ent.name}: {patched.status_code}, visible={visible}")
    for name in ordered_for_delete(rt.model):
        ops, _, _ = declared(role, name)
        mine = [r for r in rt.records.query(name, where={"owner_id": me["id"]}, limit=5) if r["id"] != me["id"]]
        if mine:
            expect(f"delete {name}", client.delete(f"/api/v1/{name}/{mine[0]['id']}", headers=auth),
                   "delete" in ops, {204, 409, 422})
    assert not problems, "\n".join(problems)


def test_the_base_roles_cover_every_user_role_the_demo_draws(crm):
    drawn = set(crm.model.entity("user").fields["role"].prop("demo")["choices"]) | {"standard", "admin"}
    assert drawn <= set(crm.model.roles), drawn - set(crm.model.roles)
