"""Moved to ``engine.mail`` (shared by the automations and the agenda's reminders)."""

from engine.mail import MailError, message_id, send_mail  # noqa: F401
