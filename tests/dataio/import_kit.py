"""Helpers of the import tests: a site layer with lookups declared ``import_by``, files, a one-call import."""

from __future__ import annotations

import csv
import io

import pytest

from engine.dataio.importing.plugin import imports_of
from engine.dataio.importing.service import Options
from engine.storage.context import Context

SITE = {"visit.yaml": """
    entity: visit
    label: {en: Visit, zh: 拜访}
    title: subject
    fields:
      subject: {type: text, required: true, label: {en: Subject, zh: 主题}}
      account: {type: lookup, to: account, label: {en: Account, zh: 客户}}
      account_no: {type: lookup, to: account, import_by: account_number, label: {en: Account by number, zh: 客户按编号}}
      lead: {type: lookup, to: lead, import_by: external_id, label: {en: Lead, zh: 线索}}
      amount: {type: number, scale: 2, label: {en: Amount, zh: 金额}}
      visited_on: {type: date, label: {en: Visited on, zh: 拜访日期}}
      done: {type: boolean, label: {en: Done, zh: 完成}}
      code: {type: text, unique: true, label: {en: Code, zh: 编码}}
    validations:
      - {name: amount_positive, error_when: "amount < 0", field: amount,
         message: {en: The amount cannot be negative, zh: 金额不能为负}}
"""}


@pytest.fixture
def site(make_runtime, write_tree):
    """The base CRM with the ``visit`` entity above."""
    return make_runtime(site_dir=write_tree("site", SITE))


def write_csv(path, rows, encoding="utf-8", delimiter=","):
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def run_import(rt, path, entity, *, dry_run=False, user_id=None, access=None, **options):
    """Start and run an import in this thread; the finished job."""
    service = imports_of(rt)
    job_id = service.start(path, entity, Options(**options), user_id=user_id, access=access, dry_run=dry_run,
                           run=False)
    return service.run(job_id)


def records(rt, entity, **where):
    return rt.records.query(entity, where=where or None, limit=10000)


def admin(rt):
    return rt.records.create("user", {"name": "Admin", "email": "admin@example.com", "role": "admin"},
                             context=Context(system=True))
