"""Data in, data out, data clean: one capability (``engine/dataio``) in four parts, each a default
plugin of its own so it can be switched off alone:

* ``importing`` (``"imports"``): CSV and XLSX import with mapping, dry run, error rows, revert and
  restartable background jobs, behind the CLI (``crm import``), the API and the web wizard;
* ``duplicates`` (``"duplicates"``, metadata ``"duplicates.kinds"``): duplicate rules declared in
  metadata, checked on every write, and the duplicate scan;
* ``merge`` (``"merge"``): merging records into a survivor, moving every reference, with undo;
* ``quality`` (``"quality"``): the data-quality page (completeness, invalid values, duplicate groups).

Exports of lists stay in the platform (``engine/api/exports.py``): the API's and the UI's list
routes both give them. The parts may use each other (one capability); no other capability imports
them (``.importlinter``).
"""
