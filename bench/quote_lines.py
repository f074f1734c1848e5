"""Totals kept live: inserting 10,000 lines into 1,000 parents through the record service.

A small synthetic model (not the CRM's entities): a ``doc`` with a ``subtotal`` rollup of its
lines' totals and a stored ``grand_total`` formula over it (discount, tax, shipping), and a ``line``
with a stored ``total`` formula. Each line is one ``RecordService.create`` (its own transaction): the
line, then the parent row locked, aggregated, its formula recomputed, its version, history and
``updated_at`` moved. The baseline, in the same run, inserts the same lines one by one into a model
whose ``doc`` has neither the rollup nor the formula (plain columns) and whose line's ``total`` is a
plain column too. Reported: lines/s of each and the ratio live / plain (goal: at least 0.5).

SQLite by default; ``BENCH_DATABASE_URL=postgresql+psycopg://...`` runs it on PostgreSQL (a schema of
its own). ``BENCH_LINES`` and ``BENCH_PARENTS`` change the 10,000 and 1,000.
"""

from __future__ import annotations

import benchenv  # a throwaway key for encrypted fields; the database

import os
import sys
import tempfile
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.runtime import Runtime  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.storage.records import Context  # noqa: E402

LINES = int(os.environ.get("BENCH_LINES", "10000"))
PARENTS = int(os.environ.get("BENCH_PARENTS", "1000"))

LIVE = """
entity: doc
title: name
fields:
  name: {type: text, required: true}
  discount: {type: percent, min: 0, max: 100, default: 0}
  tax: {type: currency, min: 0}
  shipping: {type: currency, min: 0}
  subtotal: {type: rollup, of: line.doc, function: SUM, field: total}
  grand_total: {type: formula, returns: currency, expr: "subtotal * (1 - discount / 100) + tax + shipping",
                blank_as_zero: true, track_history: true}
---
entity: line
fields:
  doc: {type: lookup, to: doc, required: true, on_delete: cascade}
  quantity: {type: number, min: 0}
  unit_price: {type: currency, min: 0}
  total: {type: formula, returns: currency, expr: "quantity * unit_price", blank_as_zero: true}
"""

#: The same model with plain columns where LIVE computes.
PLAIN = (LIVE.replace("  subtotal: {type: rollup, of: line.doc, function: SUM, field: total}\n", "  subtotal: {type: currency}\n")
         .replace("""  grand_total: {type: formula, returns: currency, expr: "subtotal * (1 - discount / 100) + tax + shipping",
                blank_as_zero: true, track_history: true}
""", "  grand_total: {type: currency}\n")
         .replace('  total: {type: formula, returns: currency, expr: "quantity * unit_price", blank_as_zero: true}\n',
                  "  total: {type: currency}\n"))


def _runtime(folder: Path, model: str, name: str) -> tuple[Runtime, str | None]:
    root = folder / name / "industries"
    (root / "base").mkdir(parents=True)
    (root / "base" / "model.yaml").write_text(model.lstrip(), encoding="utf-8")
    url, schema = benchenv.database_url(folder / name / "lines.db", f"lines_{name}")
    rt = Runtime.boot(Settings(database_url=url, backup_dir=folder / name / "backups", var_dir=folder / name,
                               plugin_dirs=(), entry_point_plugins=False, secret_key="bench", config_root=root))
    rt.migrate()
    return rt, schema


def _insert(rt: Runtime) -> float:
    """Seconds to insert LINES lines, one create each, spread over PARENTS parents."""
    rec = rt.records
    system = Context(system=True, automations=False)
    parents = rec.bulk("doc", [{"name": f"D{i}", "discount": i % 20, "tax": "1.50", "shipping": "4"}
                               for i in range(PARENTS)], context=system)
    ids = [item["id"] for item in parents.items]
    writer = Context(automations=False)
    started = time.perf_counter()
    for i in range(LINES):
        rec.create("line", {"doc": ids[i % PARENTS], "quantity": i % 7 + 1, "unit_price": f"{i % 50}.25"},
                   context=writer)
    return time.perf_counter() - started


def _check(rt: Runtime) -> None:
    """The live totals are right: every parent's grand total from its lines, computed here."""
    rec = rt.records
    sums: dict[int, Decimal] = {}
    for start in range(0, LINES, 5000):
        for line in rec.query("line", limit=5000, offset=start):
            sums[line["doc"]] = sums.get(line["doc"], Decimal(0)) + line["total"]
    for doc in rec.query("doc", limit=PARENTS):
        subtotal = sums.get(doc["id"], Decimal(0))
        want = (subtotal * (1 - doc["discount"] / 100) + doc["tax"] + doc["shipping"]).quantize(Decimal("0.01"), ROUND_HALF_UP)
        assert doc["subtotal"] == subtotal and doc["grand_total"] == want, (doc, subtotal, want)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        made = []
        try:
            plain_rt, schema = _runtime(Path(tmp), PLAIN, "plain")
            made.append((plain_rt, schema))
            live_rt, schema = _runtime(Path(tmp), LIVE, "live")
            made.append((live_rt, schema))
            print(f"Lines with live totals ({live_rt.db.dialect})")
            plain = _insert(plain_rt)
            live = _insert(live_rt)
            _check(live_rt)
            print(f"  {LINES:,} lines into {PARENTS:,} parents, totals live: {LINES / live:>10,.0f} lines/s ({live:.1f} s)")
            print(f"  the same lines, no rollup/formulas:  {LINES / plain:>10,.0f} lines/s ({plain:.1f} s)")
            print(f"  ratio live / plain:                  {plain / live:>10.2f}   (goal: at least 0.5)")
        finally:
            for rt, schema in made:
                rt.close()
                benchenv.drop_schema(schema)


if __name__ == "__main__":
    main()
