"""Conversions: what a record turns into (a lead into an account, a contact and an opportunity),
declared in metadata and done in one transaction through the record service.

* ``spec.py``: the ``conversion`` document kind compiled (``compile_conversions``), checked with
  file:line by ``kinds.py`` (which also declares the ``converted`` automation trigger);
* ``service.py``: ``proposal`` (mapped values and match candidates per target, from
  ``engine.matching``), ``convert`` (create / attach / skip per target; every error or nothing
  written; children moved, the source stamped, ``converted`` fired) and ``convert_many`` (bulk);
* ``lock.py``: only a conversion marks a record converted, and a converted one stays read-only;
* ``api.py`` and ``ui.py``: ``/api/v1/{entity}/{id}/_convert`` (GET, POST), ``/api/v1/{entity}/_convert``
  (bulk) and their OpenAPI fragment; the Convert button, the convert screen and the bulk screen;
* ``plugin.py``: the default plugin that wires them in (``"conversions"``).

See docs/metadata.md#conversions and docs/api.md#conversions.
"""
