"""The ``conversions``  process (engine/processes/__init__.py)."""
