"""``crm user``, ``crm token``, ``crm keys``: who may sign in, with what, and the keys of encrypted
fields. Commands of the ``crm`` group (engine/cli.py), which gives them the runtime (``@click.pass_obj``)."""

from __future__ import annotations

import sys

import click


@click.group()
def token() -> None:
    """API tokens (sent as 'Authorization: Bearer <token>')."""


@token.command("create")
@click.option("--email", required=True, help="The user the token acts as.")
@click.option("--name", default="cli", show_default=True, help="What the token is for.")
@click.option("--days", type=click.IntRange(min=1), default=None, help="Expire after this many days (default: never).")
@click.pass_obj
def token_create(crm, email: str, name: str, days: int | None) -> None:
    """Create a token; it is shown once, only its hash is kept."""
    from engine.security.tokens import create_token

    rt = crm.runtime()
    users = rt.records.query("user", where={"email": email}, limit=1)
    if not users:
        click.echo(f"There is no user with e-mail {email}.", err=True)
        sys.exit(1)
    token_id, text = create_token(rt.records, users[0]["id"], name, days=days)
    click.echo(f"Token {token_id} for {email} (shown once, keep it safe):\n{text}")


@token.command("revoke")
@click.argument("token_id", type=int)
@click.pass_obj
def token_revoke(crm, token_id: int) -> None:
    """Revoke a token by its id."""
    from engine.security.tokens import revoke_token

    if not revoke_token(crm.runtime().records, token_id):
        click.echo(f"No active token {token_id}.", err=True)
        sys.exit(1)
    click.echo(f"Token {token_id} revoked.")


@click.group()
def user() -> None:
    """Users: create, list, disable."""


@user.command("create")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--role", default="standard", show_default=True, help="A role of the model (crm user roles lists them).")
@click.option("--team", default=None)
@click.option("--manager", "manager_email", default=None, help="E-mail of the user's manager.")
@click.option("--password", default=None, help="Default: a generated one, shown once. Prefer the prompt: --password -")
@click.pass_obj
def user_create(crm, email: str, name: str, role: str, team: str | None, manager_email: str | None,
                password: str | None) -> None:
    """Create a user who can log in; prints a generated password once (never one you typed)."""
    from engine.security.audit import audit
    from engine.security.passwords import new_password, set_password
    from engine.storage.errors import ValidationFailed
    from engine.storage.records import Context

    rt = crm.runtime()
    if role not in rt.model.roles:
        click.echo(f"There is no role {role!r}; roles: {', '.join(sorted(rt.model.roles))}.", err=True)
        sys.exit(1)
    manager = None
    if manager_email:
        found = rt.records.query("user", where={"email": manager_email}, limit=1)
        if not found:
            click.echo(f"There is no user with e-mail {manager_email}.", err=True)
            sys.exit(1)
        manager = found[0]["id"]
    if password == "-":
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    generated = password is None
    password = password or new_password()
    try:
        made = rt.records.create("user", {"name": name, "email": email, "role": role, "team": team, "manager": manager},
                                 context=Context(system=True))
    except ValidationFailed as exc:
        click.echo(f"Not created: {exc}", err=True)
        sys.exit(1)
    set_password(rt.records, made["id"], password)
    audit(rt.records, "user_change", record_id=made["id"], entity="user",
          detail={"event": "create", "role": role, "team": team, "manager": manager, "by": "cli"})
    click.echo(f"User {made['id']} {made['email']} ({role}) created."
               + (f"\nPassword (shown once): {password}" if generated else ""))


@user.command("list")
@click.pass_obj
def user_list(crm) -> None:
    """Every user: id, e-mail, name, role, team, active."""
    rt = crm.runtime()
    for u in rt.records.query("user", order_by=("id",), limit=100_000):
        click.echo(f"{u['id']:>5}  {u['email']:<32} {u['name']:<24} {u['role'] or '-':<10} {u['team'] or '-':<8} "
                   f"{'active' if u['active'] is not False else 'disabled'}")


@user.command("disable")
@click.argument("email")
@click.pass_obj
def user_disable(crm, email: str) -> None:
    """Disable a user: their tokens and sessions stop working at once (records stay theirs)."""
    from engine.security.audit import audit
    from engine.storage.records import Context

    rt = crm.runtime()
    found = rt.records.query("user", where={"email": email}, limit=1)
    if not found:
        click.echo(f"There is no user with e-mail {email}.", err=True)
        sys.exit(1)
    rt.records.update("user", found[0]["id"], {"active": False}, context=Context(system=True))
    from engine.security.web import end_sessions

    end_sessions(rt.records, found[0]["id"])
    audit(rt.records, "user_change", record_id=found[0]["id"], entity="user",
          detail={"event": "disable", "changed": {"active": [found[0]["active"], False]}, "by": "cli"})
    click.echo(f"User {email} disabled.")


@click.group()
def keys() -> None:
    """Encryption keys of encrypted fields (CRM_ENCRYPTION_KEYS)."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new key: put it first in CRM_ENCRYPTION_KEYS with the old keys behind it (a new key
    alone cannot read what the old ones wrote: the start refuses it), then run `crm keys rotate`."""
    from engine.storage.crypto import new_key_line

    click.echo(new_key_line())


@keys.command("rotate")
@click.pass_obj
def keys_rotate(crm) -> None:
    """Re-encrypt every encrypted value with the newest key (batches, one transaction each)."""
    from engine.security.audit import audit
    from engine.storage.crypto import keyring, rotate

    rt = crm.runtime()
    changed = rotate(rt.records)
    audit(rt.records, "keys_rotated", detail={"key": keyring().current, "values": changed, "by": "cli"})
    click.echo(f"Re-encrypted {changed} value(s) with key {keyring().current}.")
