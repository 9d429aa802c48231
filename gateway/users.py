"""Console users, their roles and personal API tokens.

Passwords are hashed with werkzeug's scrypt; a personal token is 32 random bytes, so its
SHA-256 is enough to store it: nobody can guess a preimage, and a lookup by hash is one
indexed query.  The CLI, the sign-in form and the settings page all go through here.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta
from typing import NamedTuple, Optional

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from gateway.store.db import reading, run_in_transaction
from gateway.store.models import ApiToken, SignInFailure, User, utcnow

ROLES = ("viewer", "operator", "admin")
"""Each role can do everything the roles before it can."""
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
TOKEN_PREFIX = "gwp_"
FAILURE_WINDOW = timedelta(minutes=5)
MAX_FAILURES = 10
"""More failed sign-ins than this for one name within FAILURE_WINDOW are answered 429."""
# A hash to check a password against when the name is unknown, so both cases cost one scrypt.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(8))

users = User.__table__
api_tokens = ApiToken.__table__


class UserError(ValueError):
    """A request about users that cannot be done; the message says why, for people."""


class Principal(NamedTuple):
    """Who is acting: a user, or the service token (``user_id`` None, named ``admin``)."""

    name: str
    role: str
    user_id: Optional[int] = None

    def can(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise UserError("a user name is 1-64 characters of A-Z a-z 0-9 . _ @ -")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password or "") < 8:
        raise UserError("a password has at least 8 characters")
    return password


def create_user(engine: Engine, name: str, role: str, password: str) -> int:
    values = dict(name=check_name(name), role=check_role(role),
                  password_hash=generate_password_hash(check_password(password)), enabled=True,
                  created_at=utcnow())

    def work(conn: Connection) -> int:
        if conn.execute(select(users.c.id).where(users.c.name == name)).first():
            raise UserError(f"user {name!r} already exists")
        return conn.execute(insert(users).values(**values).returning(users.c.id)).scalar_one()

    return run_in_transaction(engine, work)


def create_first_admin(engine: Engine) -> Optional[str]:
    """On an empty users table, create ``admin`` with a generated password and return it; else None."""
    with reading(engine) as conn:
        if conn.execute(select(func.count()).select_from(users)).scalar_one():
            return None
    password = secrets.token_urlsafe(12)
    try:
        create_user(engine, "admin", "admin", password)
    except UserError:
        return None  # another process created it at the same moment
    return password


def list_users(engine: Engine) -> list:
    with reading(engine) as conn:
        return conn.execute(select(users).order_by(users.c.name)).all()


def get_user(engine: Engine, user_id: int):
    with reading(engine) as conn:
        return conn.execute(select(users).where(users.c.id == user_id)).first()


def _update(engine: Engine, name: str, **values) -> None:
    def work(conn: Connection) -> None:
        if conn.execute(update(users).where(users.c.name == name).values(**values)).rowcount != 1:
            raise UserError(f"no user {name!r}")

    run_in_transaction(engine, work)


def set_role(engine: Engine, name: str, role: str) -> None:
    _update(engine, name, role=check_role(role))


def set_enabled(engine: Engine, name: str, enabled: bool) -> None:
    _update(engine, name, enabled=enabled)


def set_password(engine: Engine, name: str, password: str) -> None:
    _update(engine, name, password_hash=generate_password_hash(check_password(password)))


def set_preferences(engine: Engine, name: str, language: Optional[str], timezone: Optional[str]) -> None:
    _update(engine, name, language=language or None, timezone=timezone or None)


def recent_failures(engine: Engine, name: str) -> int:
    with reading(engine) as conn:
        return conn.execute(select(func.count()).select_from(SignInFailure.__table__).where(
            SignInFailure.username == name[:64], SignInFailure.at > utcnow() - FAILURE_WINDOW)).scalar_one()


def authenticate(engine: Engine, name: str, password: str):
    """The enabled user with this name and password, or None (the failure is recorded)."""
    with reading(engine) as conn:
        row = conn.execute(select(users).where(users.c.name == name[:64])).first()
    good = check_password_hash(row.password_hash if row else _DUMMY_HASH, password)
    if row is not None and good and row.enabled:
        return row
    now = utcnow()

    def record(conn: Connection) -> None:
        conn.execute(insert(SignInFailure.__table__).values(username=name[:64], at=now))
        conn.execute(delete(SignInFailure.__table__).where(SignInFailure.at < now - FAILURE_WINDOW))

    run_in_transaction(engine, record)
    return None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: Engine, user_name: str, token_name: str) -> str:
    """A new personal token for the user; the only time its text exists outside the caller."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)

    def work(conn: Connection) -> None:
        user_id = conn.execute(select(users.c.id).where(users.c.name == user_name)).scalar()
        if user_id is None:
            raise UserError(f"no user {user_name!r}")
        conn.execute(insert(api_tokens).values(user_id=user_id, name=token_name[:255] or "token",
                                               token_hash=_token_hash(token), created_at=utcnow()))

    run_in_transaction(engine, work)
    return token


def list_tokens(engine: Engine, user_id: Optional[int] = None) -> list:
    query = (select(api_tokens, users.c.name.label("user_name")).join(users, users.c.id == api_tokens.c.user_id)
             .where(api_tokens.c.revoked_at.is_(None)).order_by(api_tokens.c.id))
    if user_id is not None:
        query = query.where(api_tokens.c.user_id == user_id)
    with reading(engine) as conn:
        return conn.execute(query).all()


def revoke_token(engine: Engine, token_id: int, user_id: Optional[int] = None) -> bool:
    """Revoke a token (only the given user's when ``user_id`` is set); False if there was none."""
    where = [api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None)]
    if user_id is not None:
        where.append(api_tokens.c.user_id == user_id)
    return run_in_transaction(engine, lambda conn: conn.execute(
        update(api_tokens).where(*where).values(revoked_at=utcnow())).rowcount) == 1


def principal_for_token(engine: Engine, token: str) -> Optional[Principal]:
    """The enabled user a live personal token belongs to."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    with reading(engine) as conn:
        row = conn.execute(
            select(users.c.id, users.c.name, users.c.role)
            .join(api_tokens, api_tokens.c.user_id == users.c.id)
            .where(api_tokens.c.token_hash == _token_hash(token), api_tokens.c.revoked_at.is_(None),
                   users.c.enabled.is_(True))).first()
    return Principal(row.name, row.role, row.id) if row else None
