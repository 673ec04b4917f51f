"""Logging under systemd: priorities and fields reach the journal, with or without systemd-python.

systemd hands a service a stream socket to journald as stderr and names it in
``$JOURNAL_STREAM`` as ``DEVICE:INODE`` (systemd.exec(5)). These tests do the
same with a real socket pair: the child's stderr is one end, and
``$JOURNAL_STREAM`` is that end's real ``fstat``. journald reads a ``<N>``
prefix on each line as its priority (sd-daemon(3)).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: A child that logs one record at each level and a traceback.
LOG_EACH_LEVEL = """
import logging, sys
{prelude}
from kiosk import logs
logs.JOURNAL_SOCKET = sys.argv[1]  # where journald's socket is, for this run
logs.setup_logging("DEBUG")
log = logging.getLogger("kiosk.daemon")
log.debug("dbg"); log.info("inf"); log.warning("wrn"); log.error("err"); log.critical("crit")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("failed")
"""


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def _stream_of(sock: socket.socket) -> str:
    st = os.fstat(sock.fileno())
    return f"{st.st_dev}:{st.st_ino}"


def _run_with_stderr_socket(code: str, *args: str, journal_stream: str | None) -> str:
    """Run ``code`` with its stderr one end of a socket pair; what it wrote there.

    ``journal_stream``: ``$JOURNAL_STREAM`` for the child, "stderr" for its stderr's own, None for none.
    """
    ours, theirs = socket.socketpair()
    with ours, theirs:
        if journal_stream == "stderr":
            journal_stream = _stream_of(theirs)
        env = _child_env() if journal_stream is None else _child_env(JOURNAL_STREAM=journal_stream)
        r = subprocess.run([sys.executable, "-c", code, *args], stderr=theirs.fileno(), env=env, timeout=60)
        theirs.close()
        out = b""
        while chunk := ours.recv(65536):
            out += chunk
    assert r.returncode == 0, out.decode()
    return out.decode()


@pytest.fixture
def journal_socket(tmp_path):
    """A socket where journald's would be: the kiosk sees journald running."""
    path = tmp_path / "journal.socket"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    yield path
    s.close()


def test_without_systemd_python_each_stderr_line_carries_its_priority(journal_socket):
    """stderr is the journal and systemd-python is missing: every line, a traceback's too, starts with <N>."""
    code = LOG_EACH_LEVEL.format(prelude='sys.modules["systemd"] = None  # systemd-python is missing')
    lines = _run_with_stderr_socket(code, str(journal_socket), journal_stream="stderr").splitlines()
    assert lines[0].startswith("<4>WARNING [MainThread] kiosk.logs: journald is running but systemd-python is missing")
    assert lines[1:6] == ["<7>DEBUG [MainThread] kiosk.daemon: dbg", "<6>INFO [MainThread] kiosk.daemon: inf",
                          "<4>WARNING [MainThread] kiosk.daemon: wrn", "<3>ERROR [MainThread] kiosk.daemon: err",
                          "<2>CRITICAL [MainThread] kiosk.daemon: crit"]
    traceback = lines[6:]
    assert traceback[0] == "<3>ERROR [MainThread] kiosk.daemon: failed"
    assert traceback[1] == "<3>Traceback (most recent call last):"
    assert traceback[-1] == "<3>ZeroDivisionError: division by zero"
    assert all(line.startswith("<3>") for line in traceback)


@pytest.mark.parametrize("stream", [None, "elsewhere"], ids=["no JOURNAL_STREAM", "JOURNAL_STREAM names another file"])
def test_stderr_that_is_not_the_journal_has_no_prefixes(journal_socket, stream):
    """A terminal or a file (or a stream inherited from a parent's journal) gets plain, time-stamped lines."""
    other, peer = socket.socketpair()  # open throughout, so that its inode names nothing else
    with other, peer:
        if stream == "elsewhere":
            stream = _stream_of(other)
        code = LOG_EACH_LEVEL.format(prelude='sys.modules["systemd"] = None')
        text = _run_with_stderr_socket(code, str(journal_socket), journal_stream=stream)
    assert "kiosk.daemon: err" in text
    assert not [line for line in text.splitlines() if line.startswith("<")]
    assert " ERROR   [MainThread] kiosk.daemon: err" in text


def _journal_fields(datagram: bytes) -> dict[str, str]:
    """The fields of one message in journald's native protocol (systemd.journal-fields(7), sd_journal_sendv)."""
    fields, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:  # KEY\n, a little-endian 64-bit size, the value, \n
            key = line
            (size,) = struct.unpack_from("<Q", datagram, nl + 1)
            value = datagram[nl + 9:nl + 9 + size]
            i = nl + 9 + size + 1
        fields[key.decode()] = value.decode()
    return fields


#: A child, in a mount namespace of its own, that stands in for journald at
#: journald's socket (libsystemd sends there, and only there), logs from a
#: thread named after a stage, and prints what arrived.
FAKE_JOURNALD = """
import json, logging, socket, sys, threading
sys.path.insert(0, sys.argv[1])
server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
server.bind("/run/systemd/journal/socket")
from kiosk.logs import setup_logging
setup_logging("INFO")
from stage import tick
t = threading.Thread(target=tick, name="match"); t.start(); t.join()
server.settimeout(5)
print(json.dumps([server.recv(65536).hex() for _ in range(2)]))
"""

STAGE = '''import logging

log = logging.getLogger("kiosk.daemon")


def tick():
    log.info("camera delivering frames")
    log.error("camera stopped delivering frames (%s)", "stalled")
'''


def test_with_systemd_python_records_reach_journald_with_their_fields(tmp_path):
    """Through libsystemd to journald's socket: priority, logger, stage, and where in the code; stderr stays quiet."""
    pytest.importorskip("systemd.journal")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a mount namespace with its own /run/systemd/journal)")
    (tmp_path / "stage.py").write_text(STAGE)
    shell = ("mount -t tmpfs tmpfs /run/systemd 2>/dev/null || { mkdir -p /run/systemd && "
             "mount -t tmpfs tmpfs /run/systemd; }; mkdir -p /run/systemd/journal; exec \"$@\"")
    argv0 = ("unshare", "--mount", "--propagation", "private", "sh", "-c", shell, "sh", sys.executable, "-c")
    ours, theirs = socket.socketpair()
    with ours, theirs:
        r = subprocess.run([*argv0, FAKE_JOURNALD, str(tmp_path)], stderr=theirs.fileno(), stdout=subprocess.PIPE,
                           env=_child_env(JOURNAL_STREAM=_stream_of(theirs)), timeout=60)
        theirs.close()
        ours.settimeout(5)
        stderr = b""
        while chunk := ours.recv(65536):
            stderr += chunk
    assert r.returncode == 0, stderr.decode()
    info, error = (_journal_fields(bytes.fromhex(d)) for d in json.loads(r.stdout))
    assert (info["MESSAGE"], info["PRIORITY"]) == ("camera delivering frames", "6")
    assert error["MESSAGE"] == "camera stopped delivering frames (stalled)"
    assert {k: error[k] for k in ("PRIORITY", "LOGGER", "THREAD_NAME", "SYSLOG_IDENTIFIER", "CODE_FUNC")} == {
        "PRIORITY": "3", "LOGGER": "kiosk.daemon", "THREAD_NAME": "match", "SYSLOG_IDENTIFIER": "kiosk",
        "CODE_FUNC": "tick"}
    # Where the record was made, not the handler that sent it.
    assert (error["CODE_FILE"], error["CODE_LINE"]) == (str(tmp_path / "stage.py"), "8")
    # stderr is the journal too: one copy of each record, the structured one.
    assert stderr == b""
