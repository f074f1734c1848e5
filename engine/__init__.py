"""crm-engine: a metadata-driven CRM runtime.

Entities, fields, layouts and rules are declared in YAML under ``configs/``; this package builds
the database, the record service and (later) the API and UI from those declarations.
"""

__version__ = "0.1.0"
