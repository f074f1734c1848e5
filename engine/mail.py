"""Outbound e-mail for the ``send_email`` action.

``CRM_MAIL_URL`` says where mail goes:

* ``smtp://host:port`` (``smtp+starttls://user:password@host:587`` for STARTTLS with a login,
  ``smtps://...`` for TLS from the start): a real SMTP server;
* ``file:///path/to/folder`` (the default, ``var/outbox``): each message is written there as an
  ``.eml`` file, so a laptop with no mail server still shows what would have been sent.

The Message-ID is derived from the run's idempotency key, so a retried job sends the same message
(a mail server or client can drop the duplicate).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote, urlsplit


class MailError(RuntimeError):
    pass


def message_id(key: str, index: int) -> str:
    """The Message-ID of action ``index`` of the run with idempotency ``key``: the same on every retry."""
    import hashlib

    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}.{index}@crm-engine>"


def send_mail(settings, *, to: list[str], subject: str, body: str, html: bool = False, message_id: str,
              attachments: tuple = ()) -> None:
    """Send (or write) one message; ``attachments``: ``(filename, content type, bytes)`` each."""
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id
    msg.set_content(body, subtype="html" if html else "plain")
    for filename, content_type, content in attachments:
        maintype, _slash, subtype = content_type.partition("/")
        msg.add_attachment(content, maintype=maintype, subtype=subtype or "octet-stream", filename=filename)
    url = urlsplit(settings.mail_target)
    if url.scheme == "file":
        folder = Path(unquote(url.path))
        folder.mkdir(parents=True, exist_ok=True)
        name = "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in message_id.strip("<>"))
        (folder / f"{name}.eml").write_bytes(bytes(msg))
        return
    if url.scheme not in ("smtp", "smtps", "smtp+starttls"):
        raise MailError(f"CRM_MAIL_URL: unknown scheme {url.scheme!r} (smtp, smtps, smtp+starttls or file)")
    host, port = url.hostname or "localhost", url.port
    try:
        if url.scheme == "smtps":
            client = smtplib.SMTP_SSL(host, port or 465, timeout=30, context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(host, port or (587 if url.scheme == "smtp+starttls" else 25), timeout=30)
        with client:
            if url.scheme == "smtp+starttls":
                client.starttls(context=ssl.create_default_context())
            if url.username:
                client.login(unquote(url.username), unquote(url.password or ""))
            client.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"send_email: the mail server {host}:{port} refused or failed: {exc}") from None
