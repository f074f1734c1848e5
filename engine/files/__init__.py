"""Files stored through a storage interface (docs/ui.md#attachments, docs/metadata.md#file-fields):
attachments on any record (``_crm_file`` rows whose ``field`` is empty) and the ``file`` field type
(a field holding the id of a ``_crm_file`` row). The bytes live in a ``Store`` (a local folder under
the var dir by default, an S3-compatible bucket for several servers: docs/operations.md#file-storage)."""
