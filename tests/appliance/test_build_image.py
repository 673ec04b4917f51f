"""scripts/build-image.sh: argument checks, the dry run, and a build on a small two-partition disk image."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "scripts" / "build-image.sh"
SECTOR = 512


def run_build(*args, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", str(BUILD), *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture
def inputs(tmp_path):
    image = tmp_path / "raspios-lite.img"
    image.write_bytes(b"\0" * 4096)
    key = tmp_path / "fleet-root.pub"
    key.write_text('{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}\n')
    return image, key, tmp_path / "kiosk.img"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--image": None}, "--image is required"),
        ({"--fleet-key": None}, "--fleet-key is required"),
        ({"--output": None}, "--output is required"),
        ({"--image": "/nonexistent.img"}, "no such file"),
        ({"--fleet-key": "/nonexistent.pub"}, "no such file"),
        ({"--hostname": "Door_1!"}, "letters, digits"),
        ({"--wheel": "/nonexistent.whl"}, "no such file"),
        ({"--frobnicate": ""}, "unknown argument"),
    ],
)
def test_bad_arguments_are_refused(inputs, change, message):
    image, key, out = inputs
    args = {"--image": image, "--fleet-key": key, "--output": out, "--dry-run": ""}
    for k, v in change.items():
        if v is None:
            args.pop(k)
        else:
            args[k] = v
    argv = [x for k, v in args.items() for x in ((k,) if v == "" else (k, v))]
    r = run_build(*argv, check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr


def test_refuses_an_empty_key_a_wrong_file_type_and_an_existing_output(inputs, tmp_path):
    image, key, out = inputs
    empty = tmp_path / "empty.pub"
    empty.write_text("")
    assert "empty file" in run_build("--image", image, "--fleet-key", empty, "--output", out, check=False).stderr
    iso = tmp_path / "raspios.iso"
    iso.write_bytes(b"\0")
    assert "expected a .img" in run_build("--image", iso, "--fleet-key", key, "--output", out, check=False).stderr
    out.write_bytes(b"keep me")
    r = run_build("--image", image, "--fleet-key", key, "--output", out, "--dry-run", check=False)
    assert r.returncode == 2 and "--force" in r.stderr
    assert out.read_bytes() == b"keep me"
    same = run_build("--image", image, "--fleet-key", key, "--output", image, "--force", "--dry-run", check=False)
    assert "must differ" in same.stderr


def test_refuses_a_bad_userconf_and_an_invalid_config(inputs, tmp_path):
    image, key, out = inputs
    userconf = tmp_path / "userconf.txt"
    userconf.write_text("pi:raspberry\n")  # a plain password, not a crypt hash
    r = run_build("--image", image, "--fleet-key", key, "--output", out, "--userconf", userconf, check=False)
    assert r.returncode == 2 and "openssl passwd" in r.stderr
    bad = tmp_path / "kiosk.toml"
    bad.write_text("[gpio]\nrelay_pin = 17\nsmoke = true\n")
    r = run_build("--image", image, "--fleet-key", key, "--output", out, "--config", bad, check=False)
    assert r.returncode == 2 and "gpio.smoke" in r.stderr


def test_dry_run_prints_the_plan_and_changes_nothing(inputs):
    image, key, out = inputs
    before = sorted(p.name for p in image.parent.iterdir())
    r = run_build("--image", image, "--fleet-key", key, "--output", out, "--hostname", "door-1", "--ssh", "--dry-run")
    assert "copy" in r.stdout and "install.sh --root" in r.stdout and "door-1" in r.stdout and "SSH" in r.stdout
    assert "dry run: nothing was changed" in r.stdout
    assert sorted(p.name for p in image.parent.iterdir()) == before


# -- a real build, on a small disk image laid out like Raspberry Pi OS's -------


def _mkfs(path: Path, content: Path, size_mb: int) -> None:
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(content), str(path), f"{size_mb}M"], check=True, capture_output=True
    )


def _disk(path: Path, parts: list[Path]) -> list[tuple[int, int]]:
    """Write an MBR disk image holding the given partition images; returns (start, sectors)."""
    layout, start = [], 2048
    for p in parts:
        sectors = p.stat().st_size // SECTOR
        layout.append((start, sectors))
        start += sectors
    mbr = bytearray(SECTOR)
    for i, (s, n) in enumerate(layout):
        mbr[446 + 16 * i : 446 + 16 * (i + 1)] = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", s, n)
    mbr[510:512] = b"\x55\xaa"
    with path.open("wb") as f:
        f.write(mbr)
        for (s, _), p in zip(layout, parts):
            f.seek(s * SECTOR)
            f.write(p.read_bytes())
    return layout


def _debugfs(part: Path, request: str) -> str:
    r = subprocess.run(["debugfs", "-R", request, str(part)], capture_output=True, text=True, check=True)
    return r.stdout


def _loops_on(path: Path) -> list[str]:
    r = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"], capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if str(path) in line]


@pytest.mark.slow
def test_builds_a_kiosk_image(tmp_path):
    if os.geteuid() != 0 or not Path("/dev/loop-control").exists():
        pytest.skip("needs root and loop devices")
    for tool in ("mkfs.ext4", "debugfs", "partx", "losetup"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    boot, root = tmp_path / "boot", tmp_path / "rootfs"
    (boot / "overlays").mkdir(parents=True)
    (boot / "config.txt").write_text("camera_auto_detect=1\n")
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('PRETTY_NAME="Raspbian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\n')
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\nvideo:x:44:\ngpio:x:993:\n")
    (root / "etc/hostname").write_text("raspberrypi\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    (root / "boot/firmware").mkdir(parents=True)
    p1, p2 = tmp_path / "p1.ext4", tmp_path / "p2.ext4"
    _mkfs(p1, boot, 8)
    _mkfs(p2, root, 256)  # room for the wheels: the models alone are 100 MB
    image = tmp_path / "raspios-lite.img"
    _disk(image, [p1, p2])
    key = tmp_path / "fleet-root.pub"
    key.write_text('{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}\n')
    userconf = tmp_path / "userconf.txt"
    userconf.write_text("installer:$6$salt$abcdefghijklmnopqrstuvwxyz\n")
    out = tmp_path / "kiosk.img"
    image_bytes = image.read_bytes()

    r = run_build(
        "--image", image, "--fleet-key", key, "--output", out,
        "--hostname", "door-1", "--userconf", userconf, "--ssh", "--enable-gpio",
    )  # fmt: skip
    assert "wrote" in r.stdout
    assert image.read_bytes() == image_bytes  # the official image is left alone
    assert not _loops_on(out) and not _loops_on(Path(str(out) + ".partial"))
    assert not Path(str(out) + ".partial").exists()

    # Read the result back without mounting it.
    data = out.read_bytes()
    (s1, n1), (s2, n2) = [struct.unpack_from("<II", data, 446 + 16 * i + 8) for i in range(2)]
    p1_out, p2_out = tmp_path / "p1.out", tmp_path / "p2.out"
    p1_out.write_bytes(data[s1 * SECTOR : (s1 + n1) * SECTOR])
    p2_out.write_bytes(data[s2 * SECTOR : (s2 + n2) * SECTOR])
    assert _debugfs(p2_out, "cat /etc/kiosk/fleet-root.pub") == key.read_text()
    assert "ExecStart=/opt/kiosk/venv/bin/kiosk run" in _debugfs(p2_out, "cat /etc/systemd/system/kiosk.service")
    assert "install.sh --firstboot" in _debugfs(p2_out, "cat /etc/systemd/system/kiosk-firstboot.service")
    wants = _debugfs(p2_out, "ls /etc/systemd/system/multi-user.target.wants")
    assert "kiosk-firstboot.service" in wants
    wheels = _debugfs(p2_out, "ls /opt/kiosk/wheels")
    assert "kiosk-0.1.0-py3-none-any.whl" in wheels
    assert "face_recognition_models-0.3.0-py2.py3-none-any.whl" in wheels  # built once, not at first boot
    assert "numpy==" in _debugfs(p2_out, "cat /opt/kiosk/share/requirements.lock")
    assert "enabled = true" in _debugfs(p2_out, "cat /etc/kiosk/kiosk.toml").split("[gpio]")[1].split("[")[0]
    assert "Mode:  0640" in _debugfs(p2_out, "stat /etc/kiosk/kiosk.toml")
    passwd = _debugfs(p2_out, "cat /etc/passwd")
    assert "\nkiosk:x:" in passwd
    group = _debugfs(p2_out, "cat /etc/group")
    assert "video:x:44:kiosk" in group and "gpio:x:993:kiosk" in group
    assert _debugfs(p2_out, "cat /etc/hostname").strip() == "door-1"
    assert "127.0.1.1\tdoor-1" in _debugfs(p2_out, "cat /etc/hosts")
    assert _debugfs(p1_out, "cat /userconf.txt") == userconf.read_text()
    assert "ssh" in _debugfs(p1_out, "ls /").split()


# -- --rootfs: a Debian arm64 root laid out like Raspberry Pi OS, booting under UEFI --


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--image", "IMAGE"], "give one of them"),
        (["--rootfs", "/nonexistent.tar"], "no such file"),
        (["--rootfs", "ROOTFS.tgz"], "expected a .tar"),
        (["--size", "4T"], "--size 4T"),
    ],
)
def test_rootfs_arguments_are_checked(inputs, tmp_path, extra, message):
    image, key, out = inputs
    rootfs = tmp_path / "root.tar"
    rootfs.write_bytes(b"")
    (tmp_path / "ROOTFS.tgz").write_bytes(b"")
    extra = [str(image) if a == "IMAGE" else str(tmp_path / a) if a == "ROOTFS.tgz" else a for a in extra]
    if "--rootfs" not in extra:
        extra = ["--rootfs", str(rootfs), *extra]
    r = run_build(*extra, "--fleet-key", key, "--output", out, "--dry-run", check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr


def test_rootfs_dry_run_plans_a_uefi_disk(inputs, tmp_path):
    _, key, out = inputs
    rootfs = tmp_path / "root.tar"
    rootfs.write_bytes(b"")
    r = run_build("--rootfs", rootfs, "--size", "3G", "--fleet-key", key, "--output", out, "--dry-run")
    assert "bootfs (1, FAT32) and rootfs (2, ext4)" in r.stdout and "(3G)" in r.stdout
    assert "systemd-boot" in r.stdout and "initramfs" in r.stdout and "install.sh --root" in r.stdout
    assert not out.exists()


#: A kernel's modules.dep, as depmod writes it: each module with everything it needs.
MODULES_DEP = """\
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/crypto/crc32c_generic.ko:
kernel/lib/libcrc32c.ko:
kernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko
"""


def _fake_debian_root(tmp_path: Path, *, kernel: bool = True) -> Path:
    """A tar of a root with what build-image.sh --rootfs reads: os-release, users, a kernel, its modules,
    systemd-boot's EFI binary and busybox (contents stand-ins: nothing here runs them)."""
    root = tmp_path / "debian-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\n')
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\nvideo:x:44:\n")
    (root / "etc/hostname").write_text("localhost\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tlocalhost\n")
    (root / "bin").mkdir()
    (root / "bin/busybox").write_bytes(b"\x7fELF busybox stand-in")
    (root / "usr/lib/systemd/boot/efi").mkdir(parents=True)
    (root / "usr/lib/systemd/boot/efi/systemd-bootaa64.efi").write_bytes(b"MZ systemd-boot stand-in")
    if kernel:
        kver = "6.1.0-99-arm64"
        (root / "boot").mkdir()
        (root / f"boot/vmlinuz-{kver}").write_bytes(b"MZ kernel stand-in")
        mods = root / "lib/modules" / kver
        for line in MODULES_DEP.splitlines():
            path = mods / line.split(":")[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"module {path.name}".encode())
        (mods / "modules.dep").write_text(MODULES_DEP)
        # virtio_blk built into the kernel: nothing to load for it.
        (mods / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\nkernel/drivers/block/virtio_blk.ko\n")
    tar = tmp_path / "debian-root.tar"
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "--owner=0", "--group=0", "-cf", str(tar), "."],
                   check=True)
    return tar


def _needs_rootfs_tools():
    if os.geteuid() != 0 or not Path("/dev/loop-control").exists():
        pytest.skip("needs root and loop devices")
    for tool in ("mkfs.ext4", "mkfs.vfat", "mcopy", "sfdisk", "cpio", "debugfs", "partx", "losetup"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/bootstrap installs it)")


def _mtools(*argv: str) -> str:
    r = subprocess.run(list(argv), capture_output=True, text=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.slow
def test_builds_a_uefi_image_from_a_debian_root(tmp_path):
    _needs_rootfs_tools()
    tar = _fake_debian_root(tmp_path)
    key = tmp_path / "fleet-root.pub"
    key.write_text('{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}\n')
    userconf = tmp_path / "userconf.txt"
    userconf.write_text("installer:$6$salt$abcdefghijklmnopqrstuvwxyz\n")
    out = tmp_path / "kiosk.img"
    r = run_build("--rootfs", tar, "--size", "1G", "--fleet-key", key, "--output", out,
                  "--hostname", "door-1", "--userconf", userconf)  # fmt: skip
    assert "initramfs: busybox and 8 modules" in r.stdout
    assert "nothing in this root reads userconf.txt" in r.stdout  # a Raspberry Pi OS step, said to do nothing here
    assert not _loops_on(out) and not Path(str(out) + ".partial").exists()
    assert out.stat().st_size == 1 << 30

    # The disk: Raspberry Pi OS's two partitions, the first FAT32 at 4 MiB.
    table = json.loads(subprocess.run(["sfdisk", "--json", str(out)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]  # fmt: skip
    assert table["label"] == "dos"
    (p1, p2) = table["partitions"]
    assert (p1["start"], p1["size"], p1["type"]) == (8192, 1048576, "c") and p2["start"] == 8192 + 1048576
    boot = f"{out}@@{p1['start'] * SECTOR}"
    assert "bootfs" in _mtools("mlabel", "-s", "-i", boot, "::")
    assert _mtools("mtype", "-i", boot, "::/EFI/BOOT/BOOTAA64.EFI") == "MZ systemd-boot stand-in"
    assert _mtools("mtype", "-i", boot, "::/vmlinuz") == "MZ kernel stand-in"
    entry = _mtools("mtype", "-i", boot, "::/loader/entries/kiosk.conf")
    assert "linux /vmlinuz" in entry and "initrd /initrd.img" in entry and "root=LABEL=rootfs" in entry
    assert "default kiosk.conf" in _mtools("mtype", "-i", boot, "::/loader/loader.conf")
    assert _mtools("mtype", "-i", boot, "::/userconf.txt") == userconf.read_text()

    # The initramfs: busybox, /init, and the modules in an order that loads each after what it needs.
    initrd = tmp_path / "initrd.img"
    _mtools("mcopy", "-i", boot, "::/initrd.img", str(initrd))
    listing = subprocess.run(f"zcat {initrd} | cpio -t --quiet", shell=True, capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
    assert {"init", "bin/busybox", "lib/modules/order"} <= set(listing)
    order = subprocess.run(f"zcat {initrd} | cpio -i --quiet --to-stdout lib/modules/order", shell=True,
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert sorted(order) == sorted(["virtio_pci_legacy_dev.ko", "virtio_pci_modern_dev.ko", "virtio_pci.ko",
                                    "crc32c_generic.ko", "crc16.ko", "mbcache.ko", "jbd2.ko", "ext4.ko"])
    for module, needs in (("virtio_pci.ko", ["virtio_pci_legacy_dev.ko", "virtio_pci_modern_dev.ko"]),
                          ("ext4.ko", ["crc16.ko", "mbcache.ko", "jbd2.ko"])):
        assert all(order.index(n) < order.index(module) for n in needs), order
    assert "virtio_blk.ko" not in order and "xfs.ko" not in order  # built in; not needed
    init = subprocess.run(f"zcat {initrd} | cpio -i --quiet --to-stdout init", shell=True, capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    assert init.startswith("#!/bin/busybox sh") and "switch_root /root" in init

    # The root: the Debian root, its mounts, and the kiosk staged as on a Pi.
    p2_out = tmp_path / "p2.out"
    with out.open("rb") as f:
        f.seek(p2["start"] * SECTOR)
        p2_out.write_bytes(f.read(p2["size"] * SECTOR))
    assert "bookworm" in _debugfs(p2_out, "cat /etc/os-release")
    fstab = _debugfs(p2_out, "cat /etc/fstab")
    assert "LABEL=rootfs" in fstab and "LABEL=bootfs  /boot/firmware  vfat" in fstab
    assert _debugfs(p2_out, "cat /etc/kiosk/fleet-root.pub") == key.read_text()
    assert "kiosk-firstboot.service" in _debugfs(p2_out, "ls /etc/systemd/system/multi-user.target.wants")
    assert _debugfs(p2_out, "cat /etc/hostname").strip() == "door-1"
    assert "\nkiosk:x:" in _debugfs(p2_out, "cat /etc/passwd")


def test_rootfs_without_a_kernel_is_refused(tmp_path):
    _needs_rootfs_tools()
    tar = _fake_debian_root(tmp_path, kernel=False)
    key = tmp_path / "fleet-root.pub"
    key.write_text('{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}\n')
    out = tmp_path / "kiosk.img"
    r = run_build("--rootfs", tar, "--size", "1G", "--fleet-key", key, "--output", out, check=False)
    assert r.returncode == 2 and "install linux-image-arm64 in the root" in r.stderr
    assert not out.exists() and not Path(str(out) + ".partial").exists() and not _loops_on(out)
