"""Whether a PostgreSQL store URL is safe to connect to: TLS verified, or this machine only.

libpq's default is ``sslmode=prefer``: a server (or anyone between) that
declines TLS gets the user, the database and then the password in clear,
and a certificate is never checked. So a URL that reaches another machine
must say ``sslmode=verify-full`` and name the CA that signed the server's
certificate (``sslrootcert=FILE``, or ``system`` with libpq 16 or later).
A Unix socket, ``localhost``, 127.0.0.0/8 and ::1 stay on this machine and
need neither.

The check looks at what libpq will use, before any connection: the URL's
parameters, and for those it leaves out, libpq's environment (``PGHOST``,
``PGHOSTADDR``); every host of a multi-host URL must pass. A service
(``service=`` or ``PGSERVICE``) may name any host, so it is refused.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from ..errors import ConfigError

#: libpq's own default when no host is named anywhere: its Unix socket folder.
_DEFAULT_HOST = ""


def check_store_url(url: str, setting: str = "the store URL") -> None:
    """Raise :class:`ConfigError` unless ``url`` is local or verifies the server's certificate.

    The message names ``setting`` and the hosts, never the URL (it may hold
    a password).
    """
    params = _params(url, setting)
    if "service" in params or os.environ.get("PGSERVICE"):
        raise ConfigError(
            f"{setting}: a libpq service (service= or $PGSERVICE) may name any host; write host, port, "
            "sslmode=verify-full and sslrootcert=FILE in the URL instead"
        )
    hosts, addrs = effective_hosts(params)
    remote = [h or a for h, a in zip(hosts, addrs) if not is_local(h, a)]
    if len(hosts) != len(addrs):  # libpq refuses it too; never call it local
        remote = remote or [",".join(hosts)]
    if not remote:
        return
    where = ", ".join(sorted(set(remote)))
    if params.get("sslmode") != "verify-full":
        raise ConfigError(
            f"{setting}: the PostgreSQL server {where} is not on this machine, so the URL must set "
            "sslmode=verify-full and sslrootcert=FILE (the CA that signed the server's certificate): "
            "without it, a server that declines TLS receives the user, the database and the password in clear"
        )
    _check_root_cert(params.get("sslrootcert"), setting, where)


def effective_hosts(params: dict[str, str]) -> tuple[list[str], list[str]]:
    """The (host, hostaddr) pairs libpq will try: the URL's, else ``$PGHOST``/``$PGHOSTADDR``."""
    host = params["host"] if "host" in params else os.environ.get("PGHOST", _DEFAULT_HOST)
    addr = params["hostaddr"] if "hostaddr" in params else os.environ.get("PGHOSTADDR", "")
    hosts = host.split(",")
    addrs = addr.split(",") if addr else [""] * len(hosts)
    if not host and addr:  # hostaddr alone: one entry per address
        hosts = [""] * len(addrs)
    return hosts, addrs


def is_local(host: str, hostaddr: str = "") -> bool:
    """True when libpq's connection to ``host`` (at ``hostaddr``, if given) cannot leave this machine."""
    if hostaddr and not _loopback(hostaddr):
        return False
    if hostaddr and not host:
        return True
    return host == "" or host.startswith(("/", "@")) or host.lower() == "localhost" or _loopback(host)


def _loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def _params(url: str, setting: str) -> dict[str, str]:
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ConfigError(f"{setting}: a postgresql:// store needs psycopg 3: pip install 'kiosk[backend]'") from None

    try:
        return {k: str(v) for k, v in conninfo_to_dict(url).items()}
    except ProgrammingError:
        # libpq's message may quote the URL, password and all.
        raise ConfigError(f"{setting}: not a valid postgresql:// URL") from None


def _check_root_cert(root: str | None, setting: str, where: str) -> None:
    if not root:
        raise ConfigError(
            f"{setting}: the PostgreSQL server {where} is not on this machine: set sslrootcert=FILE in the URL "
            "(the CA that signed the server's certificate), not libpq's default ~/.postgresql/root.crt"
        )
    if root == "system":
        from psycopg import pq

        if pq.version() < 160000:
            raise ConfigError(
                f"{setting}: sslrootcert=system needs libpq 16 or later (this one is {pq.version()}): "
                "name the CA's file instead"
            )
        return
    path = Path(root)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ConfigError(f"{setting}: sslrootcert={root}: no such readable file (the server's CA certificate)")
