"""Merging records: the survivor keeps, per field, the value chosen among 2 to 5 records of one
entity; every lookup and reference to the others (in every entity of the model) moves to it; the
others are deleted; all in one transaction through the record service, audited, and undoable within
the entity's ``merge: {undo_within:}`` (default 24h). The guide is docs/data.md "Merging records".

``service.merge(runtime, entity, survivor_id, merged_ids, choices, context)`` -> ``Merged``
``service.preview(runtime, entity, ids, context)``  the records side by side and what would move
``undo.undo(runtime, merge_id, context)``           put everything back
Modules: ``spec`` (the metadata and limits), ``references`` (who points at a record), ``store``
(``_crm_merge``, the merges kept for undo), ``api``, ``ui`` and ``plugin`` (the default plugin).
"""
