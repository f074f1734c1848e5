"""Approvals at work: submit, approve, reject, recall, the history of a record and a user's inbox.

Each action is one write transaction: the instance row (``_crm_approval``) is read locked (``SELECT
... FOR UPDATE`` on PostgreSQL; SQLite's write transactions run one at a time) and updated only at
the version it was read at, so of an approve and a recall racing, the second finds the instance no
longer pending and gets a 409 naming what happened. The record's ``status_field`` is written through
the record service (a system write: field history, ETag and version move with it), the approvers of
each step reached are notified (``notification`` records), and the automation triggers ``submitted``,
``approved``, ``rejected`` and ``recalled`` fire on the record when the workflow is there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from engine.messages import Msg
from engine.security.profile import wants
from engine.storage.errors import NotFound, PermissionDenied, Refused
from engine.storage.records import Context
from engine.storage.tables import USER_ENTITY

from .spec import OWNER, Approval, Step, of_entity

#: Automation triggers, by action.
TRIGGERS = {"submit": "submitted", "approve": "approved", "reject": "rejected", "recall": "recalled"}
PENDING = "pending"
MAX_COMMENT = 2000


def utcnow() -> datetime:
    return datetime.now(UTC)


class ApprovalError(Refused):
    """A refused approval action (``Refused``: status, kind, message, field, details)."""


class ApprovalService:
    """The approval processes of one runtime: ``runtime.extensions["approvals"]``."""

    def __init__(self, runtime, approvals: dict[str, Approval], clock=utcnow):
        self.runtime = runtime
        self.records = runtime.records
        self.db = runtime.records.db
        self.approvals = approvals
        self.clock = clock
        tables = self.records.metadata.tables
        self.instances, self.steps = tables["_crm_approval"], tables["_crm_approval_step"]
        self.entities = frozenset(a.entity for a in approvals.values())
        #: child entity -> (its lookup, the entity with the process): lines locked with their record
        self.lines: dict[str, set[tuple[str, str]]] = {}
        for a in approvals.values():
            for child, lookup in a.lines:
                self.lines.setdefault(child, set()).add((lookup, a.entity))

    # -- reading -----------------------------------------------------------------------------------
    def pending(self, conn, entity: str, record_id: int, *, lock: bool = False):
        """The pending instance row of a record, or None."""
        i = self.instances
        stmt = sa.select(i).where(i.c.entity == entity, i.c.record_id == record_id, i.c.status == PENDING)
        if lock and not self.db.is_sqlite:
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        return SimpleNamespace(**row._mapping) if row is not None else None

    def current_approvers(self, conn, instance) -> set[int]:
        """Who may decide the instance's current step now (their row is pending)."""
        s = self.steps
        return {r[0] for r in conn.execute(sa.select(s.c.approver_id).where(
            s.c.approval_id == instance.id, s.c.step == instance.step, s.c.decision == PENDING))}

    def lock_of(self, conn, entity: str, record_id: int, user_id: int | None, admin: bool) -> Approval | None:
        """The process holding the record locked for this user (pending and they are no current approver
        nor admin), or None."""
        if entity not in self.entities or admin:
            return None
        instance = self.pending(conn, entity, record_id)
        if instance is None or (user_id is not None and user_id in self.current_approvers(conn, instance)):
            return None
        return self.approvals.get(instance.process)

    def history(self, entity: str, record_id: int, *, access, user_id: int | None) -> list[dict]:
        """Every submission of the record, newest first, with each step's decisions; for a user who
        may read the record or has been asked to approve it."""
        with self.db.read() as conn:
            rows = conn.execute(sa.select(self.instances).where(
                self.instances.c.entity == entity, self.instances.c.record_id == record_id)
                .order_by(self.instances.c.id.desc()).limit(50)).all()
            decisions = conn.execute(sa.select(self.steps).where(self.steps.c.approval_id.in_([r.id for r in rows]))
                                     .order_by(self.steps.c.id)).all() if rows else []
            asked = user_id is not None and any(d.approver_id == user_id for d in decisions)
            if not asked:
                self._readable(conn, entity, record_id, access, user_id)
            names = self._names(conn, {d.approver_id for d in decisions} | {r.submitted_by for r in rows})
        return [self._instance_json(r, [d for d in decisions if d.approval_id == r.id], names, user_id) for r in rows]

    def waiting(self, user_id: int) -> int:
        """How many approvals wait for ``user_id``'s decision (the navigation's count)."""
        i, s = self.instances, self.steps
        with self.db.read() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(s.join(i, i.c.id == s.c.approval_id)).where(
                s.c.approver_id == user_id, s.c.decision == PENDING, i.c.status == PENDING,
                s.c.step == i.c.step)).scalar()

    def inbox(self, user_id: int, *, limit: int = 200) -> list[dict]:
        """What waits for ``user_id``'s decision: the pending steps they are an approver of."""
        i, s = self.instances, self.steps
        with self.db.read() as conn:
            rows = conn.execute(sa.select(i, s.c.name.label("step_name"), s.c.created_at.label("asked_at"))
                                .select_from(s.join(i, i.c.id == s.c.approval_id))
                                .where(s.c.approver_id == user_id, s.c.decision == PENDING, i.c.status == PENDING,
                                       s.c.step == i.c.step).order_by(s.c.created_at, s.c.id).limit(limit)).all()
            names = self._names(conn, {r.submitted_by for r in rows})
            out = []
            for r in rows:
                approval = self.approvals.get(r.process)
                ent = self.records.model.entities.get(r.entity)
                if approval is None or ent is None:
                    continue
                record = self._load(conn, r.entity, r.record_id)
                title = record.get(ent.title) if record and ent.title else None
                step = approval.step(r.step)
                out.append({"id": r.id, "process": r.process, "label": dict(approval.label.texts), "entity": r.entity,
                            "record_id": r.record_id, "title": str(title) if title not in (None, "") else f"#{r.record_id}",
                            "step": {"index": r.step, "name": step.name, "label": dict(step.label.texts)},
                            "submitted_by": _person(r.submitted_by, names), "submitted_at": r.submitted_at.isoformat(),
                            "asked_at": r.asked_at.isoformat()})
        return out

    # -- actions -----------------------------------------------------------------------------------
    def submit(self, entity: str, record_id: int, *, user_id: int, access, comment: str | None = None) -> dict:
        """Start an approval of the record: the first process of its entity whose ``when`` holds, if the
        user may submit and the record is not pending already (a rejected, recalled or approved one may be
        submitted again)."""
        comment = _comment(comment)
        processes = of_entity(self.approvals, entity)
        if not processes:
            raise ApprovalError(404, "not-found", f"{entity} records have no approval process")
        now = self.clock()
        with self.db.write() as conn:
            self._readable(conn, entity, record_id, access, user_id)
            # the approval's row before the record's, in the order a decision takes them (no deadlock);
            # two submits of one record queue on the record's row, the second finds the first's approval
            self._not_pending(conn, entity, record_id, lock=True)
            self.records._load(conn, self.records.model.entity(entity), record_id, lock=True)
            self._not_pending(conn, entity, record_id)
            record = self.records.get(entity, record_id, conn=conn)     # with the values computed on read
            approval = next((a for a in processes if a.when is None
                             or self._holds(conn, a, a.when, record, user_id, now)), None)
            if approval is None:
                conditions = "; ".join(f"{a.name}: {a.when.expression}" for a in processes)
                raise ApprovalError(422, "not-needed", f"this {entity} needs no approval now (a process starts "
                                                       f"when: {conditions})")
            if not self._may_submit(approval, record, user_id, access):
                allowed = ", ".join(sorted(approval.submitters))
                raise ApprovalError(403, "forbidden", f"you may not submit this {entity} for {approval.name} "
                                                      f"(submitters: {allowed}, admin)")
            iid = conn.execute(self.instances.insert().values(
                process=approval.name, entity=entity, record_id=record_id, status=PENDING, step=-1,
                submitted_by=user_id, submitted_at=now, comment=comment, version=1)).inserted_primary_key[0]
            instance = SimpleNamespace(**conn.execute(sa.select(self.instances).where(self.instances.c.id == iid))
                                       .first()._mapping)
            self._advance(conn, approval, instance, record, 0, user_id, now)
            return self._state(conn, entity, record_id, iid, user_id)

    def approve(self, entity: str, record_id: int, *, user_id: int, comment: str | None = None) -> dict:
        """The user approves the current step; with ``all`` the step waits for every approver."""
        return self._decide(entity, record_id, user_id, "approved", _comment(comment))

    def reject(self, entity: str, record_id: int, *, user_id: int, comment: str | None) -> dict:
        """The user rejects the record (a comment is required): the approval ends rejected."""
        return self._decide(entity, record_id, user_id, "rejected", _comment(comment))

    def recall(self, entity: str, record_id: int, *, user_id: int, comment: str | None = None) -> dict:
        """The submitter takes the record back while it is pending."""
        comment = _comment(comment)
        now = self.clock()
        with self.db.write() as conn:
            instance = self._pending_or_409(conn, entity, record_id)
            if instance.submitted_by != user_id:
                raise ApprovalError(403, "forbidden", Msg("only the user who submitted it may recall it"))
            approval = self.approvals[instance.process]
            self._cancel(conn, instance, now)
            self._finish(conn, approval, instance, "recalled", user_id, now, comment)
            return self._state(conn, entity, record_id, instance.id, user_id)

    # -- the steps ---------------------------------------------------------------------------------
    def _decide(self, entity: str, record_id: int, user_id: int, decision: str, comment: str | None) -> dict:
        now = self.clock()
        s = self.steps
        with self.db.write() as conn:
            instance = self._pending_or_409(conn, entity, record_id)
            mine = conn.execute(sa.select(s.c.id, s.c.decision).where(
                s.c.approval_id == instance.id, s.c.step == instance.step, s.c.approver_id == user_id)).first()
            if mine is None:
                raise ApprovalError(403, "not-approver", Msg("you are not an approver of the current step of this {entity}", entity=entity))
            if mine.decision != PENDING:
                raise ApprovalError(409, "already-decided", Msg("you have already {decision} this step", decision=mine.decision))
            if decision == "rejected" and not comment:
                raise ApprovalError(422, "validation", Msg("a rejection needs a comment saying why"), field="comment")
            conn.execute(s.update().where(s.c.id == mine.id).values(decision=decision, comment=comment, decided_at=now))
            approval = self.approvals[instance.process]
            step = approval.step(instance.step)
            if decision == "rejected":
                self._cancel(conn, instance, now)
                self._finish(conn, approval, instance, "rejected", user_id, now, comment)
            elif step.rule == "all" and self.current_approvers(conn, instance):
                self._bump(conn, instance)          # the step waits for the others
            else:
                self._cancel(conn, instance, now)
                record = self.records.get(entity, record_id, conn=conn)
                self._advance(conn, approval, instance, record, instance.step + 1, user_id, now)
            return self._state(conn, entity, record_id, instance.id, user_id)

    def _not_pending(self, conn, entity: str, record_id: int, *, lock: bool = False) -> None:
        if self.pending(conn, entity, record_id, lock=lock) is not None:
            raise ApprovalError(409, "already-pending", Msg("this {entity} is already pending approval", entity=entity))

    def _pending_or_409(self, conn, entity: str, record_id: int):
        instance = self.pending(conn, entity, record_id, lock=True)
        if instance is not None and instance.process not in self.approvals:
            raise ApprovalError(409, "not-declared", f"this {entity} is pending in the approval process "
                                                     f"{instance.process!r}, which the metadata no longer declares")
        if instance is not None:
            return instance
        last = conn.execute(sa.select(self.instances.c.status).where(
            self.instances.c.entity == entity, self.instances.c.record_id == record_id)
            .order_by(self.instances.c.id.desc()).limit(1)).first()
        if last is None:
            if entity not in self.entities:
                raise ApprovalError(404, "not-found", f"{entity} records have no approval process")
            raise ApprovalError(409, "not-pending", f"this {entity} is not pending approval: it was never submitted")
        raise ApprovalError(409, "not-pending", f"this {entity} is not pending approval: it was {last.status}")

    def _advance(self, conn, approval: Approval, instance, record: dict, start: int, actor: int | None,
                 now: datetime) -> None:
        """Go to the first step from ``start`` that is not skipped and ask its approvers; past the last, approved."""
        for index in range(start, len(approval.steps)):
            step = approval.step(index)
            if step.skip_when is not None and self._holds(conn, approval, step.skip_when, record, actor, now):
                conn.execute(self.steps.insert().values(approval_id=instance.id, step=index, name=step.name,
                                                        approver_id=None, decision="skipped", created_at=now,
                                                        decided_at=now))
                continue
            approvers = self._approvers(conn, step, record)
            if not approvers:
                raise ApprovalError(422, "no-approver", f"step {step.name!r} of {approval.name} has no approver for "
                                                        f"this {approval.entity} (nobody active matches "
                                                        f"{_describe(step)})")
            conn.execute(self.steps.insert(), [{"approval_id": instance.id, "step": index, "name": step.name,
                                                "approver_id": uid, "decision": PENDING, "created_at": now}
                                               for uid in approvers])
            self._bump(conn, instance, step=index)
            if start == 0:
                record = self._set_status(conn, approval, record, "pending", actor)
                self._fire(conn, approval, "submit", record, actor, now)
            self._notify(conn, approval, step, record, approvers)
            return
        if start == 0:   # every step skipped: approved at once, submitted all the same
            record = self._set_status(conn, approval, record, "pending", actor)
            self._fire(conn, approval, "submit", record, actor, now)
        self._finish(conn, approval, instance, "approved", actor, now, None)

    def _finish(self, conn, approval: Approval, instance, status: str, actor: int | None, now: datetime,
                comment: str | None) -> None:
        self._bump(conn, instance, status=status, decided_at=now)
        record = self.records.get(approval.entity, instance.record_id, conn=conn)
        record = self._set_status(conn, approval, record, status, actor)
        self._fire(conn, approval, {"approved": "approve", "rejected": "reject", "recalled": "recall"}[status],
                   record, actor, now)
        if instance.submitted_by is not None and instance.submitted_by != actor and status != "recalled":
            self._notify_people(conn, approval, record, [instance.submitted_by],
                                f"{self._name_of(approval, record)}: {approval.label} {status}"
                                + (f" ({comment})" if comment else "")
                                + f" / {approval.label.get('zh')}: {_ZH[status]}")

    def _bump(self, conn, instance, **values) -> None:
        """Move the instance on, only from the version it was read at (a racing decision loses: 409)."""
        i = self.instances
        done = conn.execute(i.update().where(i.c.id == instance.id, i.c.version == instance.version)
                            .values(version=instance.version + 1, **values)).rowcount
        if done != 1:
            raise ApprovalError(409, "conflict", "this approval was changed by someone else meanwhile; reload it")
        instance.version += 1
        for key, value in values.items():
            setattr(instance, key, value)

    def _cancel(self, conn, instance, now: datetime) -> None:
        """The step's pending rows no longer wait (any: one approval was enough; a reject, a recall)."""
        s = self.steps
        conn.execute(s.update().where(s.c.approval_id == instance.id, s.c.decision == PENDING)
                     .values(decision="cancelled", decided_at=now))

    def _approvers(self, conn, step: Step, record: dict) -> list[int]:
        users = self.records.table(USER_ENTITY)
        active = users.c.active.is_not(False)
        found: list[int] = []
        a = step.approvers
        if a.users:
            found += [r[0] for r in conn.execute(sa.select(users.c.id).where(
                sa.func.lower(users.c.email).in_([u.lower() for u in a.users]), active).order_by(users.c.id))]
        if a.roles:
            found += [r[0] for r in conn.execute(sa.select(users.c.id).where(users.c.role.in_(a.roles), active)
                                                 .order_by(users.c.id))]
        for levels in a.managers:
            person = record.get("owner_id")
            for _ in range(levels):
                row = conn.execute(sa.select(users.c.manager).where(users.c.id == person)).first() if person else None
                person = row[0] if row else None
            if person is not None:
                found.append(person)
        found += [record[f] for f in a.fields if record.get(f) is not None]
        if not found:
            return []
        alive = {r[0] for r in conn.execute(sa.select(users.c.id).where(users.c.id.in_(set(found)), active))}
        return [u for u in dict.fromkeys(found) if u in alive]

    def _set_status(self, conn, approval: Approval, record: dict, status: str, actor: int | None) -> dict:
        if approval.status_field is None or record.get(approval.status_field) == status:
            return record
        return self.records.update(approval.entity, record["id"], {approval.status_field: status},
                                   context=Context(user_id=actor, system=True), conn=conn)

    def _fire(self, conn, approval: Approval, action: str, record: dict, actor: int | None, now: datetime) -> None:
        conn.execute(self.records.metadata.tables["_crm_audit"].insert().values(
            at=now, kind=f"approval_{TRIGGERS[action]}", actor_id=actor, ip=None, entity=approval.entity,
            record_id=record["id"], detail={"approval": approval.name}))
        workflow = self.runtime.extensions.get("workflow")
        if workflow is not None:
            workflow.fire(conn, approval.entity, TRIGGERS[action], record, context=Context(user_id=actor),
                          occurrence=f"{approval.name}:{TRIGGERS[action]}:{now.isoformat()}")

    def _notify(self, conn, approval: Approval, step: Step, record: dict, approvers: list[int]) -> None:
        name = self._name_of(approval, record)
        self._notify_people(conn, approval, record, approvers,
                            f"{name} waits for your approval ({approval.label}: {step.label}) / "
                            f"{name} 等待您审批（{approval.label.get('zh')}：{step.label.get('zh')}）")

    def _notify_people(self, conn, approval: Approval, record: dict, users: list[int], message: str) -> None:
        if "notification" not in self.records.model.entities:
            return
        for uid in users:
            if not wants(self.records, uid, "approval", "in_app"):
                continue   # turned off on the user's profile (the inbox still lists it)
            self.records.create("notification", {"user": uid, "message": message[:1000],
                                                 "record": f"{approval.entity}:{record['id']}",
                                                 "automation": f"approval:{approval.name}", "owner_id": uid},
                                context=Context(system=True, automations=False), conn=conn)

    def _name_of(self, approval: Approval, record: dict) -> str:
        ent = self.records.model.entity(approval.entity)
        title = record.get(ent.title) if ent.title else None
        return f"{ent.label} {title}" if title not in (None, "") else f"{ent.label} #{record['id']}"

    def _holds(self, conn, approval: Approval, rule, record: dict, user_id: int | None, now: datetime) -> bool:
        from engine import rules

        svc = self.records
        paths = frozenset(p for p in rule.fields if "." in p)
        related = rules.fetch_related(conn, svc.metadata, svc.model, approval.entity, record, paths) if paths else None
        user = self._load(conn, USER_ENTITY, user_id) if "user" in rule.uses and user_id is not None else None
        return rule.evaluate(record, prior=record, is_new=False, user=user, now=now, related=related) is True

    def _may_submit(self, approval: Approval, record: dict, user_id: int, access) -> bool:
        if access is None or access.admin:
            return True
        return (OWNER in approval.submitters and record.get("owner_id") == user_id) or access.role in approval.submitters

    def _readable(self, conn, entity: str, record_id: int, access, user_id) -> dict:
        """The record, if the caller may read it (404 otherwise, as a record they may not see)."""
        try:
            self.records.get(entity, record_id, context=Context(user_id=user_id, access=access), conn=conn)
            return self.records.get(entity, record_id, conn=conn)
        except (NotFound, PermissionDenied):
            raise ApprovalError(404, "not-found", f"there is no {entity} {record_id} you may see") from None

    def _load(self, conn, entity: str, record_id: int | None) -> dict | None:
        if record_id is None:
            return None
        try:
            return self.records.get(entity, record_id, conn=conn)
        except NotFound:
            return None

    def _names(self, conn, ids: set) -> dict[int, str]:
        ids = {i for i in ids if i is not None}
        if not ids:
            return {}
        users = self.records.table(USER_ENTITY)
        return {r.id: r.name for r in conn.execute(sa.select(users.c.id, users.c.name).where(users.c.id.in_(ids)))}

    def _state(self, conn, entity: str, record_id: int, iid: int, user_id: int | None) -> dict:
        row = conn.execute(sa.select(self.instances).where(self.instances.c.id == iid)).first()
        decisions = conn.execute(sa.select(self.steps).where(self.steps.c.approval_id == iid)
                                 .order_by(self.steps.c.id)).all()
        names = self._names(conn, {d.approver_id for d in decisions} | {row.submitted_by})
        return self._instance_json(row, decisions, names, user_id)

    def _instance_json(self, row, decisions, names: dict, user_id: int | None) -> dict:
        approval = self.approvals.get(row.process)
        steps = []
        for index, step in enumerate(approval.steps if approval else ()):
            mine = [d for d in decisions if d.step == index]
            steps.append({"index": index, "name": step.name, "label": dict(step.label.texts), "rule": step.rule,
                          "skipped": any(d.decision == "skipped" for d in mine),
                          "decisions": [{"approver": _person(d.approver_id, names), "decision": d.decision,
                                         "comment": d.comment,
                                         "decided_at": d.decided_at.isoformat() if d.decided_at else None}
                                        for d in mine if d.decision != "skipped"]})
        waiting = {d.approver_id for d in decisions if d.step == row.step and d.decision == PENDING}
        pending = row.status == PENDING
        return {"id": row.id, "process": row.process,
                "label": dict(approval.label.texts) if approval else {"en": row.process},
                "status": row.status, "step": row.step if pending else None,
                "submitted_by": _person(row.submitted_by, names), "submitted_at": row.submitted_at.isoformat(),
                "decided_at": row.decided_at.isoformat() if row.decided_at else None, "comment": row.comment,
                "version": row.version, "steps": steps,
                "may": {"approve": pending and user_id in waiting, "reject": pending and user_id in waiting,
                        "recall": pending and user_id == row.submitted_by}}


_ZH = {"approved": "已通过", "rejected": "已驳回", "recalled": "已撤回"}


def _person(user_id: int | None, names: dict) -> dict | None:
    return None if user_id is None else {"id": user_id, "name": names.get(user_id)}


def _describe(step: Step) -> str:
    a = step.approvers
    parts = [*(f"user {u}" for u in a.users), *(f"role {r}" for r in a.roles),
             *(f"the owner's manager {n} level(s) up" for n in a.managers), *(f"field {f}" for f in a.fields)]
    return ", ".join(parts)


def _comment(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_COMMENT:
        raise ApprovalError(422, "validation", f"comment must be a text of at most {MAX_COMMENT} characters",
                            field="comment")
    return value.strip() or None
