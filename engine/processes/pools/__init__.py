"""The ``pools``  process (engine/processes/__init__.py)."""
