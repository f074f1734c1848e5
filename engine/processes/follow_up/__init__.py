"""The ``follow_up``  process (engine/processes/__init__.py)."""
