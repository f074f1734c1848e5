"""The ``crm_attachments`` hook: the ``send_email`` action's ``attach:`` asks the plugins for each
file by name (the documents capability answers with its PDFs; here a plugin of the test's own)."""

from __future__ import annotations

import email

from engine.storage.records import Context

from .automation_kit import Harness

PLUGIN = '''
from engine.plugins import hookimpl


@hookimpl
def crm_attachments(entity, record, name, lang):
    if name != "card_txt":
        return None
    return (f"{entity.name}-{record['id']}.txt", "text/plain", f"{lang}: {record['name']}".encode())
'''

AUTOMATION = """
automation: mail_card
on: {entity: account, events: [created]}
actions:
  - do: send_email
    to: "'someone@example.com'"
    subject: "New account {{ record.name }}"
    body: "Attached."
    attach: [card_txt]
    lang: zh
"""


def test_send_email_attaches_what_a_plugin_makes_by_name(make_runtime, write_tree, smtp, receiver):
    rt = make_runtime(site_dir=write_tree("site", {"automations.yaml": AUTOMATION}),
                      plugin_dirs=(write_tree("plugins", {"card_plugin.py": PLUGIN}),),
                      mail_url=f"smtp://127.0.0.1:{smtp.port}")
    harness = Harness(rt, "inprocess", {}, receiver, smtp)
    acc = rt.records.create("account", {"name": "Acme"}, context=Context(system=True))
    [run] = harness.settle(automation="mail_card")
    assert run["status"] == "done", run
    [mail] = smtp.messages
    [part] = [p for p in email.message_from_bytes(mail["data"]).walk() if p.get_filename()]
    assert part.get_filename() == f"account-{acc['id']}.txt"
    assert part.get_payload(decode=True) == b"zh: Acme"
