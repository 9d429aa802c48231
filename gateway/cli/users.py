"""``gateway users``: console users, their roles and personal API tokens."""
from __future__ import annotations

import sys

import click

from gateway.cli.common import open_engine


@click.group("users")
def users_group():
    """Console users, their roles and personal API tokens."""


def _users_call(action, *args):
    from gateway import users

    engine = open_engine(click.get_current_context().obj)
    try:
        return action(engine, *args)
    except users.UserError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()


ROLE_CHOICE = click.Choice(["viewer", "operator", "admin"])


@users_group.command("create")
@click.argument("name")
@click.option("--role", required=True, type=ROLE_CHOICE)
@click.option("--password-stdin", is_flag=True, required=True, help="read the password from standard input")
def users_create(name: str, role: str, password_stdin: bool):
    """Create a user; the password comes from standard input, never from the command line."""
    from gateway import users

    password = sys.stdin.readline().rstrip("\r\n")
    _users_call(users.create_user, name, role, password)
    click.echo(f"created {name} ({role})")


@users_group.command("list")
def users_list():
    """Every user: name, role, and whether it may sign in."""
    from gateway import users

    for row in _users_call(users.list_users):
        click.echo(f"{row.name}\t{row.role}\t{'enabled' if row.enabled else 'disabled'}")


@users_group.command("set-role")
@click.argument("name")
@click.argument("role", type=ROLE_CHOICE)
def users_set_role(name: str, role: str):
    from gateway import users

    _users_call(users.set_role, name, role)
    click.echo(f"{name} is now {role}")


@users_group.command("disable")
@click.argument("name")
def users_disable(name: str):
    """Stop a user signing in and its tokens working (its history stays)."""
    from gateway import users

    _users_call(users.set_enabled, name, False)
    click.echo(f"{name} is disabled")


@users_group.command("token")
@click.argument("name")
@click.option("--name", "token_name", default="cli", show_default=True, help="a label for the token")
def users_token(name: str, token_name: str):
    """Create a personal API token for NAME; it is the last line printed, and shown only now."""
    from gateway import users

    token = _users_call(users.create_token, name, token_name)
    click.echo(f"personal API token for {name} (acts with {name}'s role; store it now):")
    click.echo(token)
