"""The chat plugin, used the way a site uses it: an automation posting to a local receiver standing in
for a chat's incoming webhook; a chat that fails is retried and logged; a mistake in the action's
properties is a metadata error naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.storage.records import Context
from tests.automation_kit import Harness

PLUGINS = Path(__file__).resolve().parents[2]      # the plugins/ folder: this plugin and its neighbours
AUTOMATIONS = """
automation: big_account_to_chat
on: {entity: account, events: [created]}
when: "annual_revenue >= 1000000"
retries: 1
actions:
  - {do: post_to_chat, url_env: CRM_TEST_CHAT_URL, message: "'New key account: ' & name", timeout: 5}
"""


@pytest.fixture
def chat(receiver):
    """The chat's incoming webhook: the engine's local receiver (tests/conftest.py)."""
    return receiver


@pytest.fixture
def rt(make_runtime, write_tree, chat, monkeypatch):
    monkeypatch.setenv("CRM_TEST_CHAT_URL", f"{chat.url}/hooks/sales")
    return make_runtime(plugin_dirs=(PLUGINS,), job_backoff=0.05,
                        site_dir=write_tree("site", {"automations.yaml": AUTOMATIONS}))


def settle(rt) -> list[dict]:
    """Every automation run, once all have finished (the engine's in-process runner)."""
    return Harness(rt, "inprocess", {}, None, None).settle()


def test_the_action_is_registered_and_the_base_crm_is_unchanged(make_runtime):
    """Loaded from plugins/ (as by every runtime of this project) it adds an action and no metadata."""
    from engine.workflow import actions_from_plugins

    plain, with_plugin = make_runtime(migrate=False), make_runtime(migrate=False, plugin_dirs=(PLUGINS,))
    assert "post_to_chat" in actions_from_plugins(with_plugin.pm)
    assert "post_to_chat" not in actions_from_plugins(plain.pm)
    assert with_plugin.model.digest == plain.model.digest


def test_a_matching_record_posts_its_message_once(rt, chat):
    ctx = Context(system=True)
    rt.records.create("account", {"name": "Corner shop", "annual_revenue": 20000}, context=ctx)
    big = rt.records.create("account", {"name": "Globex", "annual_revenue": 5000000}, context=ctx)
    [run] = settle(rt)
    assert (run["automation"], run["record_id"], run["status"], run["attempts"]) == ("big_account_to_chat", big["id"], "done", 1)
    [post] = chat.to("/hooks/sales")
    assert json.loads(post["body"]) == {"text": "New key account: Globex"}
    assert post["headers"]["Content-Type"] == "application/json"
    assert post["headers"]["Idempotency-Key"] == run["key"]


def test_a_chat_that_fails_is_retried_then_the_run_is_dead_with_the_reason(rt, chat, monkeypatch):
    monkeypatch.setenv("CRM_TEST_CHAT_URL", f"{chat.url}/fail")
    rt.records.create("account", {"name": "Initech", "annual_revenue": 2000000}, context=Context(system=True))
    [run] = settle(rt)
    assert (run["status"], run["attempts"]) == ("dead", 2)
    assert "post_to_chat: the chat answered 500" in run["error"]
    assert len(chat.to("/fail")) == 2
    assert len({r["headers"]["Idempotency-Key"] for r in chat.to("/fail")}) == 1   # a retry is the same delivery


def test_a_missing_message_or_url_is_a_metadata_error_naming_the_file(make_runtime, write_tree):
    from engine.metadata.errors import MetadataError

    bad = AUTOMATIONS.replace("url_env: CRM_TEST_CHAT_URL, ", "").replace("message: \"'New key account: ' & name\", ", "")
    site = write_tree("bad", {"automations.yaml": bad})
    with pytest.raises(MetadataError) as info:
        make_runtime(plugin_dirs=(PLUGINS,), site_dir=site)
    text = str(info.value)
    assert "automations.yaml" in text and "message" in text
