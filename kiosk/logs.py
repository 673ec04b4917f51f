"""Logging set-up: stderr always, journald when it is running.

Configured once, from ``main``. Under systemd, records go to journald with
their priority and fields (systemd-python, Debian's ``python3-systemd``);
without systemd-python, stderr lines carry a ``<N>`` priority prefix, which
journald reads from a stream (sd-daemon(3)), so ``journalctl -p err`` finds
errors either way. Modules use ``logging.getLogger(__name__)``.
No resident id, name or other personal data goes to the journal, in the
text or in a field: journald keeps what it is given until its own retention
drops it, and cannot erase one resident. Who checked in is in the check-in
records, which erasure and retention reach (docs/security.md).
"""

from __future__ import annotations

import logging
import os
import sys

JOURNAL_SOCKET = "/run/systemd/journal/socket"


def journald_available() -> bool:
    # journal.send drops messages silently without journald, so look first.
    return os.path.exists(JOURNAL_SOCKET)


class _JournalHandler(logging.Handler):
    """Sends records to journald with the logger and the stage (thread) as fields."""

    def __init__(self):
        super().__init__()
        from systemd import journal  # optional: systemd-python

        self._send = journal.send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {
                "PRIORITY": str(_priority(record.levelno)),
                "LOGGER": record.name,
                "THREAD_NAME": record.threadName,
                "PROCESS_NAME": record.processName,
                "SYSLOG_IDENTIFIER": "kiosk",
                # Where the record was made, not this handler (journal.send's default).
                "CODE_FILE": record.pathname,
                "CODE_LINE": record.lineno,
                "CODE_FUNC": record.funcName,
            }
            self._send(self.format(record), **fields)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class _PriorityPrefix(logging.Formatter):
    """Starts every line (a traceback's too) with ``<N>``, the record's syslog priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


#: On a terminal or in a file; the journal stamps its lines itself.
STDERR_FORMAT = "%(asctime)s %(levelname)-7s [%(threadName)s] %(name)s: %(message)s"
JOURNAL_STREAM_FORMAT = "%(levelname)s [%(threadName)s] %(name)s: %(message)s"


def stderr_is_journal() -> bool:
    """systemd connected our stderr to the journal ($JOURNAL_STREAM names it)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(level: str = "INFO", journald: bool = True) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(level)
    jh = None
    if journald and journald_available():
        try:
            jh = _JournalHandler()
        except ImportError:
            pass
        else:
            jh.setFormatter(logging.Formatter("%(message)s"))
            root.addHandler(jh)
    # Under systemd stderr is the journal too: one copy (the structured one) is enough.
    to_journal = stderr_is_journal()
    if jh is None or not to_journal:
        err = logging.StreamHandler(sys.stderr)
        if to_journal:
            err.setFormatter(_PriorityPrefix(JOURNAL_STREAM_FORMAT))
        else:
            err.setFormatter(logging.Formatter(STDERR_FORMAT))
        root.addHandler(err)
    if journald and jh is None and journald_available():
        logging.getLogger(__name__).warning("journald is running but systemd-python is missing: logging to stderr only")
