"""The import wizard's last steps and its history, on the web UI.

3./4./5. ``/ui/imports/<id>`` one import: while it runs, its progress (rows done, rate, time left:
   the page's script polls ``/ui/imports/<id>/status``) and Cancel; when a dry run ends, what it would
   create, update and reject, the first errors per column, the error file and "Run the import";
   when an import ends, its counts, error file and Undo (the record service refuses, with a reason
   per record, to undo a record changed since).
``/ui/imports`` the user's imports (an administrator's: everyone's).

An import is seen by the user who started it and by administrators only (404 for anyone else),
as in the API.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from flask import (
    Response,
    abort,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from engine.ui.common import runtime, with_message
from engine.ui.i18n import translate as _

from . import ui_drafts
from .readers import ImportFileError
from .service import ImportError_, Options, progress_of
from .tables import CANCELLED, DONE, FAILED, QUEUED, RUNNING
from .ui import rights, service

HISTORY = 100
REFUSALS_SHOWN = 5


def routes(bp) -> None:
    bp.add_url_rule("/ui/imports", "history", history, methods=["GET"])
    bp.add_url_rule("/ui/imports/<int:job_id>", "job", job_page, methods=["GET"])
    bp.add_url_rule("/ui/imports/<int:job_id>/status", "status", status, methods=["GET"])
    bp.add_url_rule("/ui/imports/<int:job_id>/errors.csv", "errors", errors_file, methods=["GET"])
    bp.add_url_rule("/ui/imports/<int:job_id>/cancel", "cancel", cancel, methods=["POST"])
    bp.add_url_rule("/ui/imports/<int:job_id>/run", "run", run_for_real, methods=["POST"])
    bp.add_url_rule("/ui/imports/<int:job_id>/revert", "revert", revert, methods=["POST"])


def statuses() -> dict[str, str]:
    return {"queued": _("Queued"), "running": _("Running"), "done": _("Done"), "failed": _("Failed"),
            "cancelled": _("Cancelled"), "reverted": _("Undone")}


def _job(job_id: int) -> dict:
    """Import ``job_id`` if this user started it (or is an administrator), after checking the role may
    still import into its entity; else 404."""
    job = service().get(job_id)
    if job is None or (not g.access.admin and job["user_id"] != g.access.user_id):
        abort(404)
    rights(job["entity"], (job["options"] or {}).get("mode") or "create")
    return job


def _state(job: dict) -> dict:
    """What the page's script shows while the job runs (and reads to know it has ended)."""
    p = progress_of(job)
    return {"status": job["status"], "label": statuses().get(job["status"], job["status"]),
            "running": job["status"] in (QUEUED, RUNNING), "rows_done": p["rows_done"],
            "rows_total": p["rows_total"], "rate": p["rate"], "seconds_left": p["seconds_left"],
            "percent": round(100 * p["rows_done"] / p["rows_total"]) if p["rows_total"] else 0,
            "counts": {c: job[c] for c in ("created", "updated", "unchanged", "failed")}}


def job_page(job_id: int):
    job = _job(job_id)
    ent = runtime().model.entity(job["entity"])
    token = request.args.get("draft") or ""
    draft = ui_drafts.load(service(), token, g.access.user_id) if token else None
    finished = job["status"] not in (QUEUED, RUNNING)
    first_errors = service().first_errors(job_id) if finished and job["failed"] else {}
    wrote = not job["dry_run"] and (job["created"] or job["updated"])
    return render_template(
        "imports/job.html", job=job, ent=ent, state=_state(job), statuses=statuses(), draft=draft,
        first_errors=first_errors, finished=finished, options=job["options"] or {},
        may_run=job["dry_run"] and job["status"] == DONE,
        may_revert=bool(wrote) and job["status"] in (DONE, CANCELLED, FAILED) and g.access.can(ent.name, "delete"))


def status(job_id: int):
    """The running job's progress as JSON, for the page's script."""
    return jsonify(_state(_job(job_id)))


def errors_file(job_id: int):
    from .revert import error_rows_csv

    job = _job(job_id)
    stem = Path(job["file_name"]).stem or "import"
    name = f"{stem}-errors.csv"
    from urllib.parse import quote

    disposition = f"attachment; filename=\"import-{job_id}-errors.csv\"; filename*=UTF-8''{quote(name)}"
    return Response(error_rows_csv(service(), job_id), mimetype="text/csv",
                    headers={"Content-Disposition": disposition})


def cancel(job_id: int):
    job = _job(job_id)
    service().cancel(job["id"])
    return with_message(url_for("imports_ui.job", job_id=job_id),
                        _("The import stops after the rows it is writing now."), "warning")


def run_for_real(job_id: int):
    """The import a finished dry run checked: same file, same options, now written."""
    job = _job(job_id)
    back = url_for("imports_ui.job", job_id=job_id)
    if not job["dry_run"] or job["status"] != DONE:
        return with_message(back, _("Only a finished dry run can be run for real."), "warning")
    options = Options(**{**(job["options"] or {}), "rows": None})
    try:
        new_id = service().start(job["file_path"], job["entity"], options, user_id=g.access.user_id,
                                 access=g.access, dry_run=False, name=job["file_name"])
    except (ImportError_, ImportFileError) as exc:
        return with_message(back, getattr(exc, "message", None) or str(exc), "danger")
    return redirect(url_for("imports_ui.job", job_id=new_id))


def revert(job_id: int):
    from .revert import RevertRefused
    from .revert import revert as undo

    job = _job(job_id)
    rights(job["entity"], "upsert")
    g.access.require(job["entity"], "delete")
    back = url_for("imports_ui.job", job_id=job_id)
    try:
        result = undo(service(), job_id, g.context)
    except RevertRefused as exc:
        return with_message(back, exc.message, "danger")
    if not result["refused"]:
        return with_message(back, _("Import undone: %(n)s record(s) put back as they were.") % {
            "n": result["reverted"]}, "success")
    shown = "; ".join(_("row %(row)s: %(reason)s") % r for r in result["refused"][:REFUSALS_SHOWN])
    more = len(result["refused"]) - REFUSALS_SHOWN
    return with_message(back, _("Undone for %(n)s record(s); %(m)s refused, left as they are now: %(list)s") % {
        "n": result["reverted"], "m": len(result["refused"]), "list": shown} + (f" (+{more})" if more > 0 else ""),
        "danger")


def history():
    jobs = service().list(user_id=None if g.access.admin else g.access.user_id, limit=HISTORY)
    model = runtime().model
    users = _user_names({j["user_id"] for j in jobs if j["user_id"]}) if g.access.admin else {}
    from .ui import importable_entities

    return render_template("imports/history.html", jobs=jobs, model=model, users=users, statuses=statuses(),
                           entities=importable_entities(), admin=g.access.admin)


def _user_names(ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    users = runtime().records.table("user")
    with runtime().db.read() as conn:
        return dict(conn.execute(sa.select(users.c.id, users.c.name).where(users.c.id.in_(ids))).all())
