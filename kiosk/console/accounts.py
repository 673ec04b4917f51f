"""The console's people: accounts with argon2id hashes, roles, lockout after failed logins, the audit log.

Everything lives in the back-end store (``console_*`` tables, migration 3
of :mod:`kiosk.backend.schema`), so that the lockout and the audit log
survive a restart and are the same for every console process. Passwords are
hashed with argon2-cffi's argon2id defaults (RFC 9106's second recommended
choice); a hash made with older parameters is re-hashed at the next login.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import uuid6
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..backend.store import Store
from ..errors import ConfigError, LoginRefused

log = logging.getLogger(__name__)

ROLES = ("admin", "viewer")
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 12

#: One verification against a made-up hash when the name is unknown: a wrong name costs what a wrong password does.
_hasher = PasswordHasher()
_DUMMY = _hasher.hash("not a password of anyone's")


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    disabled: bool
    session_epoch: int
    created_at: float
    last_login_at: float | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and not self.disabled


@dataclass(frozen=True)
class Lockout:
    """After ``failures`` wrong passwords within ``window_s``, a name is locked for ``lock_s``."""

    failures: int = 5
    window_s: float = 900.0
    lock_s: float = 900.0


def check_username(name: str) -> str:
    if not USERNAME.match(name or ""):
        raise ConfigError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


_COLS = "username, role, disabled, session_epoch, created_at, last_login_at"


def _account(row) -> Account:
    return Account(row[0], row[1], bool(row[2]), int(row[3]), row[4], row[5])


class Accounts:
    """Accounts, failed logins and the audit log in a :class:`~kiosk.backend.store.Store`."""

    def __init__(self, store: Store, lockout: Lockout = Lockout(), *, clock=time.time):
        self.store = store
        self.lockout = lockout
        self.clock = clock

    # -- accounts -----------------------------------------------------------------

    def create(self, username: str, password: str, role: str, *, actor: str, remote: str) -> Account:
        check_username(username)
        check_password(password)
        if role not in ROLES:
            raise ConfigError(f"role {role!r}: one of {', '.join(ROLES)}")
        q = self.store.q
        with self.store.transaction() as cur:
            cur.execute(q("SELECT 1 FROM console_accounts WHERE username = ?"), [username])
            if cur.fetchone():
                raise ConfigError(f"an account {username!r} exists already")
            cur.execute(q(f"INSERT INTO console_accounts ({_COLS}, password_hash) VALUES (?, ?, 0, 0, ?, NULL, ?)"),
                        [username, role, self.clock(), _hasher.hash(password)])
            self._audit(cur, actor, "account.create", username, f"role {role}", remote)
        return self.get(username)

    def get(self, username: str) -> Account | None:
        with self.store.transaction() as cur:
            cur.execute(self.store.q(f"SELECT {_COLS} FROM console_accounts WHERE username = ?"), [username])
            row = cur.fetchone()
        return _account(row) if row else None

    def all(self) -> list[Account]:
        with self.store.transaction() as cur:
            cur.execute(f"SELECT {_COLS} FROM console_accounts ORDER BY username")
            return [_account(r) for r in cur.fetchall()]

    def admins(self) -> int:
        with self.store.transaction() as cur:
            cur.execute("SELECT count(*) FROM console_accounts WHERE role = 'admin' AND disabled = 0")
            return cur.fetchone()[0]

    def update(self, username: str, *, actor: str, remote: str, role: str | None = None,
               disabled: bool | None = None, password: str | None = None) -> Account:
        """Change a role, disable or enable, set a password; a disabled account or a new password ends its sessions."""
        if role is not None and role not in ROLES:
            raise ConfigError(f"role {role!r}: one of {', '.join(ROLES)}")
        if password is not None:
            check_password(password)
        q = self.store.q
        with self.store.transaction() as cur:
            cur.execute(q(f"SELECT {_COLS} FROM console_accounts WHERE username = ?"), [username])
            row = cur.fetchone()
            if row is None:
                raise ConfigError(f"no account {username!r}")
            before = _account(row)
            if (role == "viewer" or disabled) and before.is_admin:
                cur.execute("SELECT count(*) FROM console_accounts WHERE role = 'admin' AND disabled = 0")
                if cur.fetchone()[0] <= 1:
                    raise ConfigError("the last admin cannot be demoted or disabled")
            changes = []
            if role is not None and role != before.role:
                cur.execute(q("UPDATE console_accounts SET role = ? WHERE username = ?"), [role, username])
                changes.append(f"role {before.role} -> {role}")
            if disabled is not None and disabled != before.disabled:
                cur.execute(q("UPDATE console_accounts SET disabled = ?, session_epoch = session_epoch + 1"
                              " WHERE username = ?"), [int(disabled), username])
                changes.append("disabled" if disabled else "enabled")
            if password is not None:
                cur.execute(q("UPDATE console_accounts SET password_hash = ?, session_epoch = session_epoch + 1"
                              " WHERE username = ?"), [_hasher.hash(password), username])
                cur.execute(q("DELETE FROM console_logins WHERE username = ?"), [username])
                changes.append("password set")
            if changes:
                self._audit(cur, actor, "account.update", username, "; ".join(changes), remote)
        return self.get(username)

    # -- logging in -----------------------------------------------------------------

    def login(self, username: str, password: str, *, remote: str) -> Account:
        """The account, or :class:`LoginRefused`; a locked name stays locked whatever the password.

        Failures are counted per name and per address (``address:`` and the
        client's address, which no user name can spell): a name is locked after
        ``failures`` of them, an address, trying many names, after four times
        as many.
        """
        now = self.clock()
        q = self.store.q
        named = bool(USERNAME.match(username or ""))  # anything else is no account's, and touches no name's count
        address = f"address:{remote or '-'}"
        with self.store.transaction() as cur:
            cur.execute(q("SELECT username, failures, first_failure_at, locked_until FROM console_logins"
                          " WHERE username IN (?, ?)"), [username if named else address, address])
            attempts = {r[0]: r[1:] for r in cur.fetchall()}
            cur.execute(q(f"SELECT {_COLS}, password_hash FROM console_accounts WHERE username = ?"), [username])
            row = cur.fetchone()
        for key, what in ((address, "logins from this address are"), (username if named else None, "this login is")):
            held = attempts.get(key)
            if key and held and held[2] > now:
                self.audit(username if named else "-", "login.locked", key, "refused while locked", remote)
                raise LoginRefused(f"{what} locked after too many failed attempts; try again later",
                                   locked_until=held[2])
        stored = row[6] if row else _DUMMY
        try:
            ok = _hasher.verify(stored, password) and row is not None and not row[2]
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            locked = self._failed(address, attempts.get(address), now, remote, self.lockout.failures * 4)
            if named:
                locked = self._failed(username, attempts.get(username), now, remote, self.lockout.failures) or locked
            if locked:
                raise LoginRefused("locked after too many failed attempts; try again later", locked_until=locked)
            raise LoginRefused("wrong user name or password")
        with self.store.transaction() as cur:
            cur.execute(q("DELETE FROM console_logins WHERE username = ?"), [username])
            cur.execute(q("UPDATE console_accounts SET last_login_at = ? WHERE username = ?"), [now, username])
            if _hasher.check_needs_rehash(stored):
                cur.execute(q("UPDATE console_accounts SET password_hash = ? WHERE username = ?"),
                            [_hasher.hash(password), username])
            self._audit(cur, username, "login", username, "", remote)
        return self.get(username)

    def _failed(self, key: str, attempts, now: float, remote: str, limit: int) -> float | None:
        """Count a failure of a name or an address; the time it is locked until, if this one locks it."""
        lk = self.lockout
        q = self.store.q
        if attempts is None or now - attempts[1] > lk.window_s:
            failures, first = 1, now
        else:
            failures, first = attempts[0] + 1, attempts[1]
        locked_until = now + lk.lock_s if failures >= limit else 0.0
        with self.store.transaction() as cur:
            cur.execute(q("DELETE FROM console_logins WHERE username = ?"), [key])
            cur.execute(q("INSERT INTO console_logins (username, failures, first_failure_at, locked_until)"
                          " VALUES (?, ?, ?, ?)"), [key, failures, first, locked_until])
            if not key.startswith("address:"):
                self._audit(cur, key, "login.failed", key, f"failure {failures}" + (", locked" if locked_until else ""),
                            remote)
            elif locked_until:
                self._audit(cur, "-", "login.address_locked", key, f"{failures} failures", remote)
        if locked_until:
            log.warning("console logins locked after %d failed attempts (%s)", failures,
                        "an address" if key.startswith("address:") else "a name")
        return locked_until or None

    def unlock(self, username: str, *, actor: str, remote: str) -> None:
        with self.store.transaction() as cur:
            cur.execute(self.store.q("DELETE FROM console_logins WHERE username = ?"), [username])
            self._audit(cur, actor, "account.unlock", username, "", remote)

    def locked_until(self, username: str) -> float | None:
        with self.store.transaction() as cur:
            cur.execute(self.store.q("SELECT locked_until FROM console_logins WHERE username = ?"), [username])
            row = cur.fetchone()
        return row[0] if row and row[0] > self.clock() else None

    # -- the audit log ----------------------------------------------------------------

    def audit(self, actor: str, action: str, target: str, detail: str, remote: str) -> None:
        with self.store.transaction() as cur:
            self._audit(cur, actor, action, target, detail, remote)

    def _audit(self, cur, actor: str, action: str, target: str, detail: str, remote: str) -> None:
        cur.execute(self.store.q("INSERT INTO console_audit (id, at, actor, action, target, detail, remote)"
                                 " VALUES (?, ?, ?, ?, ?, ?, ?)"),
                    [str(uuid6.uuid7()), self.clock(), actor, action, target, detail, remote or "-"])

    def forget(self, target: str, replacement: str) -> int:
        """An erased resident's id out of the audit log: each entry about them names ``replacement`` instead."""
        with self.store.transaction() as cur:
            cur.execute(self.store.q("UPDATE console_audit SET target = ? WHERE target = ?"), [replacement, target])
            return cur.rowcount

    def audit_log(self, *, limit: int = 200, actor: str | None = None) -> list[dict]:
        cols = ("at", "actor", "action", "target", "detail", "remote")
        sql = f"SELECT {', '.join(cols)} FROM console_audit"
        args: list = []
        if actor:
            sql += " WHERE actor = ?"
            args.append(actor)
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        args.append(int(limit))
        with self.store.transaction() as cur:
            cur.execute(self.store.q(sql), args)
            return [dict(zip(cols, r)) for r in cur.fetchall()]
