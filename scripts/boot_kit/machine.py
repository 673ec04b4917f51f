"""An arm64 virtual machine: qemu-system-aarch64, machine ``virt``, UEFI firmware.

The disk image boots as a Pi's would, from its own boot partition (there:
systemd-boot, the kernel and its initramfs, see build-image.sh --rootfs). The
serial console goes to a file; the guest agent's virtio-serial port to a Unix
socket. The network is QEMU's user-mode network with ``restrict=on``: the
machine reaches nothing but the addresses forwarded to it (``guestfwd``), each
joined by :mod:`.relay` to a port on this machine's loopback. Nothing listens
on any other address.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .agent import GuestAgent

FIRMWARE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
FIRMWARE_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
RELAY = Path(__file__).resolve().parent / "relay.py"
#: Where the machine sees this machine's forwarded services.
HOST_ADDRESS = "10.0.2.100"


def missing_tools() -> list[str]:
    """What booting needs and this machine lacks (scripts/bootstrap installs them)."""
    missing = []
    if shutil.which("qemu-system-aarch64") is None:
        missing.append("qemu-system-aarch64 (qemu-system-arm)")
    if not FIRMWARE.exists() or not FIRMWARE_VARS.exists():
        missing.append(f"{FIRMWARE} (qemu-efi-aarch64)")
    return missing


class Machine:
    """One run of a disk image. ``forwards`` maps a port the machine connects to on
    :data:`HOST_ADDRESS` to a loopback port here."""

    def __init__(self, image: Path, workdir: Path, *, forwards: dict[int, int] | None = None,
                 cpus: int = 2, memory_mb: int = 2048):
        self.image = Path(image)
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.forwards = dict(forwards or {})
        self.cpus, self.memory_mb = cpus, memory_mb
        self.console = self.dir / "console.log"
        self.agent_socket = self.dir / "agent.sock"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.agent = GuestAgent(self.agent_socket)

    def command(self) -> list[str]:
        netdev = "user,id=net0,restrict=on"
        for guest_port, host_port in sorted(self.forwards.items()):
            # A command per connection (a chardev would be one connection for the machine's life).
            netdev += f",guestfwd=tcp:{HOST_ADDRESS}:{guest_port}-cmd:{sys.executable} {RELAY} {host_port}"
        return [
            "nice", "-n", "10",
            "qemu-system-aarch64",
            "-machine", "virt", "-cpu", "cortex-a72",  # a Raspberry Pi 4's core
            "-smp", str(self.cpus), "-m", str(self.memory_mb),
            "-drive", f"if=pflash,format=raw,readonly=on,file={FIRMWARE}",
            "-drive", f"if=pflash,format=raw,file={self.dir / 'efivars.fd'}",
            "-drive", f"if=virtio,format=raw,file={self.image}",
            "-netdev", netdev,
            "-device", "virtio-net-pci,netdev=net0,romfile=",  # no network boot ROM: the disk boots
            "-chardev", f"socket,id=agent0,path={self.agent_socket},server=on,wait=off",
            "-device", "virtio-serial",
            "-device", "virtserialport,chardev=agent0,name=org.qemu.guest_agent.0",
            "-serial", f"file:{self.console}",
            "-display", "none", "-monitor", "none", "-nodefaults", "-no-reboot",
        ]  # fmt: skip

    def start(self) -> None:
        shutil.copyfile(FIRMWARE_VARS, self.dir / "efivars.fd")
        self.agent_socket.unlink(missing_ok=True)
        log = (self.dir / "qemu.log").open("w")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for_agent(self, timeout: float) -> float:
        """Wait until the machine's agent answers; the seconds since start."""
        deadline = time.monotonic() + timeout
        while not self.agent_socket.exists():
            if not self.running():
                raise RuntimeError(f"QEMU exited: {self.qemu_log()}")
            if time.monotonic() > deadline:
                raise RuntimeError("QEMU made no agent socket")
            time.sleep(0.5)
        self.agent.connect(max(1.0, deadline - time.monotonic()), alive=self.running)
        return time.monotonic() - self.started_at

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def console_tail(self, lines: int = 40) -> str:
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]|\r", "", self.console_text())
        return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])

    def qemu_log(self) -> str:
        p = self.dir / "qemu.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self, timeout: float = 90) -> None:
        """Power off through the agent; kill QEMU by PID if it does not stop in time. Safe to call twice."""
        if self.proc is None:
            return
        if self.running():
            try:
                self.agent.shutdown()
            except Exception:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.running():  # nice(1) exec'd QEMU: the PID is QEMU's
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.agent.close()
        self.proc = None
