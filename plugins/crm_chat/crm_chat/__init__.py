"""An example plugin: the automation action ``post_to_chat``, a message to a team chat channel.

It posts ``{"text": message}`` to an incoming-webhook URL, the format Slack, Mattermost, Rocket.Chat
and Google Chat accept. The URL holds the channel's secret, so metadata names the environment
variable that holds it (``url_env``), never the URL itself (``url`` is for local receivers)::

    automation: won_deal_to_chat
    on: {entity: opportunity, events: [updated], changed: [stage]}
    when: "stage = 'won'"
    actions:
      - {do: post_to_chat, url_env: SALES_CHAT_URL, message: "'Won: ' & name & ' (' & TEXT(amount) & ')'"}

The message is a formula, checked when the metadata loads like every formula. The post happens
after the commit, in a job of the automation runner (``external``: outside any transaction); a
chat that cannot be reached or answers an error fails the run, which is retried and then kept in
the run log. Every post carries the run's idempotency key (``Idempotency-Key``), the same on a retry.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from engine.plugins import hookimpl
from engine.workflow import ActionError, ActionType

#: What chats show at most in one message; longer texts are cut with an ellipsis.
MAX_MESSAGE = 3000


class PostToChat(ActionType):
    """POST ``{"text": message}`` to a chat's incoming webhook."""

    name = "post_to_chat"
    external = True
    schema = {"required": ["message"], "properties": {
        "url_env": {"type": "string", "description": "the environment variable holding the webhook URL"},
        "url": {"type": "string", "pattern": "^https?://", "description": "the webhook URL (for local receivers)"},
        "message": {"type": "string", "description": "formula giving the text"},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 60}}}

    def prepare(self, props, ent, c, where):
        if ("url" in props) == ("url_env" in props):
            c.problem(where, "post_to_chat needs exactly one of url_env and url")
        return {"message": c.formula(props["message"], ent.name, (*where, "message"), expect="text")}

    def run(self, act):
        props = act.step.props
        url = props.get("url") or os.environ.get(props.get("url_env", ""), "")
        if not url:
            raise ActionError(f"post_to_chat: the environment variable {props.get('url_env')} is not set")
        if not url.startswith(("https://", "http://")):
            raise ActionError(f"post_to_chat: {props.get('url_env')} does not hold an http(s) URL")
        text = str(act.value(act.step.compiled["message"]) or "").strip()
        if not text:
            return {"skipped": "the message is blank"}
        if len(text) > MAX_MESSAGE:
            text = text[:MAX_MESSAGE - 1] + "…"
        body = json.dumps({"text": text}).encode()
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "crm-engine", "Idempotency-Key": act.key})
        try:
            with urllib.request.urlopen(request, timeout=float(props.get("timeout", 10))) as response:  # noqa: S310 - http(s) only
                return {"status": response.status}
        except urllib.error.HTTPError as exc:
            raise ActionError(f"post_to_chat: the chat answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ActionError(f"post_to_chat: the chat could not be reached: {getattr(exc, 'reason', exc)}") from None


@hookimpl
def crm_actions():
    return [PostToChat()]
