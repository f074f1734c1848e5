"""quality: see engine/dataio/__init__.py."""
