"""The ``crm_scan_file`` hook: every upload is offered to the scanners before it is stored; a refusal
blocks it with the scanner's reason (the fuller tests of files are in tests/files/)."""

from __future__ import annotations

import io

import pytest

from engine.files.service import FileRefused
from engine.plugins import hookimpl


class Scanner:
    def __init__(self):
        self.seen = []

    @hookimpl
    def crm_scan_file(self, name, mime, path):
        with open(path, "rb") as f:
            data = f.read()
        self.seen.append((name, mime, len(data)))
        return "EICAR test signature found" if b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE" in data else None


def test_a_scanner_sees_each_upload_and_its_refusal_blocks_it(crm):
    scanner = Scanner()
    crm.pm.register(scanner)
    files = crm.extensions["files"]
    account = crm.model.entities["account"]
    row = files.upload(account, None, io.BytesIO(b"plain text\n"), "note.txt", user_id=None)
    assert scanner.seen == [("note.txt", "text/plain", 11)] and files.store.exists(row["key"])
    eicar = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    with pytest.raises(FileRefused, match="refused by the virus scan: EICAR test signature found"):
        files.upload(account, None, io.BytesIO(eicar), "eicar.txt", user_id=None)
    assert len(scanner.seen) == 2
