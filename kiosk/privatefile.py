"""SQLite files only their owner may read, whatever the umask.

SQLite creates a database file with mode 0644 less the process's umask, so
a database opened outside the systemd unit (whose ``UMask=0077`` does not
apply to ``kiosk-admin``, a shell or a container) is readable by every local
user. :func:`private_database` is called before SQLite opens a file: a new
file is created 0600; an existing one (and its ``-wal``/``-shm`` companions
left by an earlier run) that others may read is tightened to 0600, with a
warning, since it was readable until now. SQLite gives the ``-wal`` and
``-shm`` files it creates the main file's mode, so they are 0600 too.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

#: The files of one SQLite database in WAL mode: the database, then its companions.
COMPANIONS = ("", "-wal", "-shm", "-journal")


def private_database(path: Path | str) -> Path:
    """Create ``path`` 0600 if it is missing; tighten it and its companions to 0600 if others may read them.

    A file that cannot be tightened (another user's) is left as it is, with a warning.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass
    for suffix in COMPANIONS:
        f = Path(f"{path}{suffix}")
        try:
            mode = stat.S_IMODE(f.stat().st_mode)
        except FileNotFoundError:
            continue
        if not mode & 0o077:
            continue
        try:
            os.chmod(f, 0o600)
        except PermissionError:
            log.warning("%s: others may read this database file (mode %04o), and it is not ours to change; "
                        "chmod 600 it", f, mode)
            continue
        log.warning("%s: others could read this database file (mode %04o); it is 0600 now", f, mode)
    return path
