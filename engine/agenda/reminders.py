"""Reminders before a task is due or a meeting starts (``reminders:`` of the ``agenda`` document), sent
by the platform scheduler (``agenda.reminders``, through ``crm_scheduled_jobs``) to the activity's owner
as an in-app notification and an e-mail (``CRM_MAIL_URL``, as the automations' ``send_email``).

Each reminder goes once: a row of ``_crm_reminder_sent`` (activity, field, the due moment) is written
in the transaction that creates the notification; a rescheduled activity is reminded again for its
new time. A reminder whose moment has passed (the activity is already due) is not sent late.

The user's time zone is their ``time_zone`` field when the user entity has one (else UTC), the text in
their ``language``; whether they get it in the app and by e-mail is their profile's choice for the
``reminder`` kind (``engine.security.profile.preferences``: both by default). A mail server's failure
is logged and not retried: the notification is in, and a retry must not remind twice.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from engine.mail import MailError, message_id, send_mail
from engine.security.profile import preferences
from engine.storage.query import Filter, ListQuery

from .kinds import SENT

log = logging.getLogger(__name__)

LOOKAHEAD = timedelta(days=2)


def _system():
    from engine.storage.records import Context

    return Context(system=True, automations=False)


def zone_of(user: dict | None):
    name = (user or {}).get("time_zone") or ""
    try:
        return ZoneInfo(name) if name and name != "UTC" else timezone.utc
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def due_moment(value, rule, zone) -> datetime | None:
    """The aware UTC moment ``value`` (a date at the rule's time of day in ``zone``, or a date-time) stands for."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value or " " in value else date.fromisoformat(value)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.combine(value, rule.at or time(9, 0), tzinfo=zone).astimezone(timezone.utc)


def send_reminders(runtime, agenda, now: datetime) -> dict:
    """One pass: every reminder whose time has come and that was not sent yet. Returns counts."""
    records = runtime.records
    model = records.model
    if agenda is None or not agenda.reminders or agenda.activities not in model.entities:
        return {"reminders_sent": 0}
    ent = model.entity(agenda.activities)
    users = model.entities.get("user")
    sent_table = records.metadata.tables[SENT]
    sent = 0
    for rule in agenda.reminders:
        field = ent.fields[rule.of]
        lo, hi = now - timedelta(days=1), now + rule.before + LOOKAHEAD
        bounds = (lo.date(), hi.date()) if field.type_name == "date" else (lo, hi)
        q = ListQuery(ent.name, limit=1000, filters=[
            Filter(agenda.type, "eq", rule.type), Filter(rule.of, "gte", bounds[0]), Filter(rule.of, "lte", bounds[1]),
            Filter("owner_id", "isnull", False)])
        rows = records.list(q, context=_system()).records
        for row in rows:
            if row.get(agenda.status) in agenda.done:
                continue
            owner = row.get("owner_id")
            user = records.get("user", owner, context=_system()) if users is not None else {}
            if user.get("active") is False:
                continue
            due = due_moment(row.get(rule.of), rule, zone_of(user))
            if due is None or not (due - rule.before <= now < due):
                continue
            if _send_one(runtime, agenda, ent, rule, row, user, due, now, sent_table):
                sent += 1
    return {"reminders_sent": sent}


def _send_one(runtime, agenda, ent, rule, row, user, due, now, table) -> bool:
    records = runtime.records
    title = row.get(ent.title) if ent.title else None
    name = title if title not in (None, "") else f"{ent.label} #{row['id']}"
    when = due.astimezone(zone_of(user)).strftime("%Y-%m-%d %H:%M")
    chinese = (user.get("language") or "").startswith("zh")
    if rule.of == agenda.due:
        message = f"提醒：{name} 将于 {when} 到期" if chinese else f"Reminder: {name} is due {when}"
    else:
        message = f"提醒：{name} 将于 {when} 开始" if chinese else f"Reminder: {name} starts {when}"
    wanted = preferences(user.get("notify"))["reminder"]
    try:
        with records.db.write() as conn:
            done = conn.execute(sa.select(table.c.record_id).where(
                table.c.record_id == row["id"], table.c.field == rule.of, table.c.due_at == due)).first()
            if done is not None:
                return False
            conn.execute(table.insert().values(record_id=row["id"], field=rule.of, due_at=due,
                                               user_id=row["owner_id"], sent_at=now))
            if wanted["in_app"] and "notification" in records.model.entities:
                records.create("notification", {"user": row["owner_id"], "message": message[:1000],
                                                "record": f"{ent.name}:{row['id']}",
                                                "automation": f"reminder:{rule.type}", "owner_id": row["owner_id"]},
                               context=_system(), conn=conn)
    except sa.exc.IntegrityError:   # another scheduler sent it in the meantime
        return False
    if user.get("email") and wanted["email"]:
        try:
            send_mail(runtime.settings, to=[user["email"]], subject=message, body=message,
                      message_id=message_id(f"reminder:{row['id']}:{rule.of}:{due.isoformat()}", 0))
        except MailError as exc:   # the notification is in; a retry must not remind twice
            log.warning("reminder of %s %s for user %s not mailed: %s", ent.name, row["id"], row["owner_id"], exc)
    return True
