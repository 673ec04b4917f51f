"""The QEMU guest agent (qemu-guest-agent in the machine), over its virtio-serial socket.

The agent speaks QMP-style JSON, one object per line. A connection may hold
answers left over from an earlier one, so each connection starts with
``guest-sync-delimited``: the agent answers with a 0xFF byte before the
matching id, and everything before it is dropped.
"""

from __future__ import annotations

import base64
import json
import random
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path


class AgentError(RuntimeError):
    """The agent refused a command, or did not answer in time."""


@dataclass(frozen=True)
class Result:
    """What a command run in the machine did."""

    argv: tuple[str, ...]
    status: int | None  # None: killed by a signal
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.status == 0

    def check(self) -> "Result":
        if not self.ok:
            raise AgentError(f"{shlex.join(self.argv)} exited with {self.status}:\n{self.out[-2000:]}{self.err[-2000:]}")
        return self


class GuestAgent:
    """One connection to the agent's socket (the machine's end is org.qemu.guest_agent.0)."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        self._sock: socket.socket | None = None
        self._buf = b""

    # -- connection ---------------------------------------------------------

    def connect(self, timeout: float, *, alive=lambda: True) -> float:
        """Connect and sync, retrying until the agent answers; returns the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout
        while time.monotonic() < deadline:
            if not alive():
                raise AgentError("the machine stopped before its agent answered")
            try:
                self._open()
                if self._sync(timeout=5):
                    return time.monotonic() - start
            except (OSError, ValueError):
                pass
            self.close()
            time.sleep(2)
        raise AgentError(f"no answer from the guest agent within {timeout:.0f} s")

    def _open(self) -> None:
        self.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.path)
        self._sock, self._buf = s, b""

    def _sync(self, timeout: float) -> bool:
        token = random.randint(1, 2**31 - 1)
        self._sock.settimeout(timeout)
        self._sock.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": token}}).encode()
                           + b"\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                return False
            if not chunk:
                return False
            self._buf += chunk
            mark = self._buf.rfind(b"\xff")
            if mark >= 0 and b"\n" in self._buf[mark:]:
                line, _, rest = self._buf[mark + 1 :].partition(b"\n")
                if json.loads(line).get("return") == token:
                    self._buf = rest
                    return True
        return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- commands -----------------------------------------------------------

    def call(self, command: str, timeout: float = 60, **arguments):
        if self._sock is None:
            raise AgentError("not connected")
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._sock.settimeout(timeout)
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(1 << 20)
            except socket.timeout:
                raise AgentError(f"{command}: no answer within {timeout:.0f} s") from None
            if not chunk:
                raise AgentError(f"{command}: the agent closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        answer = json.loads(line.lstrip(b"\xff"))
        if "error" in answer:
            raise AgentError(f"{command}: {answer['error'].get('desc', answer['error'])}")
        return answer.get("return")

    def run(self, *argv: str, timeout: float = 300, stdin: bytes | None = None) -> Result:
        """Run a program in the machine (as root) and wait for it; output is captured."""
        args = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}
        if stdin is not None:
            args["input-data"] = base64.b64encode(stdin).decode()
        pid = self.call("guest-exec", **args)["pid"]
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            st = self.call("guest-exec-status", pid=pid)
            if st.get("exited"):
                return Result(tuple(argv), st.get("exitcode"),
                              base64.b64decode(st.get("out-data", "")).decode(errors="replace"),
                              base64.b64decode(st.get("err-data", "")).decode(errors="replace"))
            if time.monotonic() > deadline:
                self.run("/bin/kill", "-KILL", str(pid), timeout=30)
                raise AgentError(f"{shlex.join(argv)}: still running after {timeout:.0f} s (killed)")
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def sh(self, script: str, timeout: float = 300, stdin: bytes | None = None) -> Result:
        """Run a shell script in the machine."""
        return self.run("/bin/sh", "-c", script, timeout=timeout, stdin=stdin)

    def write(self, path: str, data: bytes, *, mode: str = "0644", owner: str = "root:root") -> None:
        """Write a file in the machine (through a shell's stdin: the agent's exec takes input data)."""
        q = shlex.quote(path)
        self.sh(f"umask 077; cat > {q}.part && chown {owner} {q}.part && chmod {mode} {q}.part && mv -f {q}.part {q}",
                stdin=data, timeout=120).check()

    def read(self, path: str) -> str:
        return self.run("/bin/cat", path, timeout=60).check().out

    def shutdown(self) -> None:
        """Ask the machine to power off (the agent sends no answer to this one)."""
        self._sock.sendall(json.dumps({"execute": "guest-shutdown", "arguments": {"mode": "powerdown"}}).encode() + b"\n")
