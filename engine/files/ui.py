"""Files on the web UI: the Attachments panel of every record page (a list with a thumbnail for
images, name, size, who and when, download, delete; an upload form) and its two screens
(``POST /ui/<entity>/<id>/attachments``, ``POST /ui/<entity>/<id>/attachments/<file_id>/delete``),
and the upload behind the ``file`` widget (``POST /ui/<entity>/_files/<field>``, answered with the
widget's box: the new file's id in a hidden input the record form then saves)."""

from __future__ import annotations

from flask import Blueprint, abort, g, render_template, request, url_for

from engine.plugins import Panel
from engine.storage.errors import NotFound, PermissionDenied
from engine.ui.common import back_to, entity_of, load_record, runtime, with_message
from engine.ui.extend import ui_routes
from engine.ui.i18n import translate as _

from .api import may_update
from .plugin import files_of
from .service import IMAGES, INLINE, FileRefused, human_size


def blueprint() -> Blueprint:
    bp = ui_routes("files_ui", __name__)
    bp.add_url_rule("/ui/<entity>/<int:record_id>/attachments", "upload", upload, methods=["POST"])
    bp.add_url_rule("/ui/<entity>/<int:record_id>/attachments/<int:file_id>/delete", "delete", delete,
                    methods=["POST"])
    bp.add_url_rule("/ui/<entity>/_files/<field>", "field_upload", field_upload, methods=["POST"])
    return bp


def _users(rt, ids) -> dict[int, str]:
    ids = sorted({i for i in ids if i})
    if not ids:
        return {}
    table = rt.records.metadata.tables["user"]
    import sqlalchemy as sa

    cols = [table.c.id] + [table.c[n] for n in ("name", "email") if n in table.c]
    with rt.records.db.read() as conn:
        rows = conn.execute(sa.select(*cols).where(table.c.id.in_(ids))).all()
    return {r.id: (getattr(r, "name", None) or getattr(r, "email", None) or f"#{r.id}") for r in rows}


def attachments_panel(service, ent, record: dict, access) -> list[Panel]:
    """The record's attachments (the page is only shown to who may read the record)."""
    if service is None:
        return []
    rt = runtime()
    rows = service.of_record(ent.name, record["id"])
    users = _users(rt, [r["uploaded_by"] for r in rows])
    base = f"/api/v1/{ent.name}/{record['id']}/_attachments"
    items = [dict(row, url=f"{base}/{row['id']}", view=f"{base}/{row['id']}?inline=1" if row["mime"] in INLINE else None,
                  image=row["mime"] in IMAGES, size_text=human_size(row["size"]),
                  who=users.get(row["uploaded_by"], "")) for row in rows]
    limits = service.default_limits
    html = render_template("files/panel.html", ent=ent, record=record, items=items,
                           can_update=may_update(ent, access),
                           accept=",".join("." + t for t in limits.types), types_text=", ".join(limits.types),
                           max_text=human_size(limits.max_size))
    title = _("Attachments") + (f" ({len(items)})" if items else "")
    return [Panel(key="attachments", title=title, html=html, order=40)]


def _record_for_update(entity: str, record_id: int):
    ent = entity_of(entity, "read")
    record = load_record(ent, record_id)
    if not may_update(ent, g.access):
        entity_of(entity, "update")   # audits the denial, 403
    return ent, record


def upload(entity: str, record_id: int):
    service = files_of(runtime()) or abort(404)
    ent, record = _record_for_update(entity, record_id)
    page = back_to(url_for("ui.record", entity=ent.name, record_id=record_id))
    part = request.files.get("file")
    if part is None or not part.filename:
        return with_message(page, _("Choose a file to attach."), "warning")
    try:
        row = service.upload(ent, record_id, part.stream, part.filename, user_id=g.identity.user_id)
    except FileRefused as exc:
        return with_message(page, _("Not attached: %(reason)s") % {"reason": exc.message}, "danger")
    return with_message(page, _("Attached %(name)s.") % {"name": row["name"]}, "success")


def delete(entity: str, record_id: int, file_id: int):
    service = files_of(runtime()) or abort(404)
    ent, record = _record_for_update(entity, record_id)
    row = service.find(file_id)
    if row is None or row["entity"] != ent.name or row["record_id"] != record_id or row["field"]:
        abort(404)
    service.delete(row, user_id=g.identity.user_id)
    page = back_to(url_for("ui.record", entity=ent.name, record_id=record_id))
    return with_message(page, _("Deleted %(name)s.") % {"name": row["name"]}, "success")


def field_upload(entity: str, field: str):
    """The file widget's upload: the box again, with the new id (or the reason it was refused)."""
    from .api import _file_field

    service = files_of(runtime()) or abort(404)
    ent = entity_of(entity, "read")
    try:
        f = _file_field(ent, field, g.access, "write")
    except (PermissionDenied, NotFound):
        abort(403)
    except Exception:   # ApiError: no such file field for this user
        abort(404)
    part = request.files.get(f"_upload_{field}") or request.files.get("file")
    error, value, name = None, request.form.get(field, ""), ""
    if part is None or not part.filename:
        error = _("Choose a file to attach.")
    else:
        try:
            row = service.upload(ent, None, part.stream, part.filename, user_id=g.identity.user_id, field=field)
            value, name = str(row["id"]), row["name"]
        except FileRefused as exc:
            error = exc.message
    return render_template("files/field_box.html", name=f.name, entity=ent.name, value=value, file_name=name,
                           error=error, url=None, ro=False)
