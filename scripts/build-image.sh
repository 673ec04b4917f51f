#!/usr/bin/env bash
# Turn an official Raspberry Pi OS Lite (Bookworm) image into a kiosk image,
# offline, from a local image file:
#
#   sudo scripts/build-image.sh --image 2024-11-19-raspios-bookworm-arm64-lite.img.xz \
#        --fleet-key fleet-root.pub --output kiosk.img
#
# It copies the image, mounts its two partitions through loop devices and
# stages the kiosk into it with scripts/install.sh --root: the package wheel
# (and a wheelhouse, for a first boot without network), the systemd unit,
# the fleet's root key, and kiosk-firstboot.service, which creates the venv
# and enables the kiosk on first boot. Nothing is downloaded.
#
# With --rootfs ROOT.tar instead of --image, it first lays out the same disk
# (a FAT32 "bootfs" and an ext4 "rootfs" partition) from a Debian arm64 root
# file system (scripts/arm64-vm-root), bootable under UEFI: systemd-boot, the
# root's kernel and a small initramfs made here (busybox and the few modules
# that reach the root disk). That image boots in qemu-system-aarch64
# (scripts/arm64-boot), the stand-in for a Pi.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: build-image.sh --image FILE --fleet-key FILE --output FILE [options]
       build-image.sh --rootfs FILE --fleet-key FILE --output FILE [options]

  --image FILE       Raspberry Pi OS Lite image (.img, or .img.xz)
  --rootfs FILE      instead of --image: a Debian arm64 root file system (.tar)
                     with a kernel, systemd-boot-efi and busybox-static in it;
                     the disk is laid out like Raspberry Pi OS's and boots
                     under UEFI (a virtual machine, not a Pi)
  --size SIZE        the disk's size with --rootfs (default 4G; sparse)
  --fleet-key FILE   the fleet's root public key (required: a kiosk trusts
                     nothing that is not signed by it)
  --output FILE      where to write the kiosk image (must not exist unless --force)
  --wheel FILE       the kiosk wheel (default: build one from this source tree)
  --wheelhouse DIR   aarch64 wheels of every dependency, for an offline first boot
  --config FILE      kiosk.toml to bake in (default: the documented defaults)
  --enable-gpio      set gpio.enabled = true in the default config
  --hostname NAME    the device's host name
  --userconf FILE    userconf.txt for the boot partition (user:encrypted-password);
                     without it Raspberry Pi OS asks for a user on first boot
  --ssh              enable the SSH server on first boot
  --force            overwrite --output
  --dry-run          check the arguments and print the plan; change nothing
  -h, --help         this text
EOF
}

die() { echo "build-image.sh: $*" >&2; exit 2; }
say() { echo "build-image.sh: $*"; }

here=$(cd "$(dirname "$0")/.." && pwd)
image="" rootfs="" size=4G fleet_key="" output="" wheel="" wheelhouse="" config="" hostname="" userconf=""
enable_gpio=0 ssh=0 force=0 dry_run=0

need_arg() { [ "$2" -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case $1 in
    --image) need_arg "$1" $#; image=$2; shift 2 ;;
    --rootfs) need_arg "$1" $#; rootfs=$2; shift 2 ;;
    --size) need_arg "$1" $#; size=$2; shift 2 ;;
    --fleet-key) need_arg "$1" $#; fleet_key=$2; shift 2 ;;
    --output) need_arg "$1" $#; output=$2; shift 2 ;;
    --wheel) need_arg "$1" $#; wheel=$2; shift 2 ;;
    --wheelhouse) need_arg "$1" $#; wheelhouse=$2; shift 2 ;;
    --config) need_arg "$1" $#; config=$2; shift 2 ;;
    --hostname) need_arg "$1" $#; hostname=$2; shift 2 ;;
    --userconf) need_arg "$1" $#; userconf=$2; shift 2 ;;
    --enable-gpio) enable_gpio=1; shift ;;
    --ssh) ssh=1; shift ;;
    --force) force=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[ -n "$image" ] || [ -n "$rootfs" ] || die "--image is required (or --rootfs)"
[ -z "$image" ] || [ -z "$rootfs" ] || die "--image and --rootfs: give one of them"
[ -n "$fleet_key" ] || die "--fleet-key is required"
[ -n "$output" ] || die "--output is required"
[ -z "$image" ] || [ -f "$image" ] || die "--image $image: no such file"
[ -z "$rootfs" ] || [ -f "$rootfs" ] || die "--rootfs $rootfs: no such file"
[[ $size =~ ^[1-9][0-9]*[MG]$ ]] || die "--size $size: a size such as 4G or 3500M"
[ -f "$fleet_key" ] || die "--fleet-key $fleet_key: no such file"
[ -s "$fleet_key" ] || die "--fleet-key $fleet_key: empty file"
[ -z "$wheel" ] || [ -f "$wheel" ] || die "--wheel $wheel: no such file"
[ -z "$wheelhouse" ] || [ -d "$wheelhouse" ] || die "--wheelhouse $wheelhouse: no such directory"
[ -z "$userconf" ] || [ -f "$userconf" ] || die "--userconf $userconf: no such file"
if [ -n "$userconf" ] && ! grep -qE '^[a-z_][a-z0-9_-]*:\$' "$userconf"; then
  die "--userconf $userconf: expected one line user:encrypted-password (openssl passwd -6)"
fi
if [ -n "$hostname" ] && ! [[ $hostname =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]]; then
  die "--hostname $hostname: letters, digits and '-' only"
fi
if [ -n "$config" ]; then
  [ -f "$config" ] || die "--config $config: no such file"
  # A config error found now is better than exit 78 on a device at a door.
  py=${PYTHON:-python3}
  if "$py" -c "import kiosk.config" 2>/dev/null; then
    "$py" -c 'import sys; from kiosk.config import load_config; load_config(sys.argv[1])' "$config" ||
      die "--config $config is not valid"
  fi
fi
if [ -n "$image" ]; then
  source=$image
  case $image in
    *.img|*.img.xz) ;;
    *) die "--image $image: expected a .img or .img.xz file" ;;
  esac
else
  source=$rootfs
  case $rootfs in
    *.tar) ;;
    *) die "--rootfs $rootfs: expected a .tar file" ;;
  esac
fi
if [ -e "$output" ] && [ "$force" -eq 0 ]; then
  die "--output $output exists (use --force to overwrite)"
fi
[ "$(realpath -m "$output")" != "$(realpath "$source")" ] || die "--output must differ from --image"

plan() {
  say "plan:"
  if [ -n "$image" ]; then
    say "  copy $image to $output"
    say "  attach its boot (1) and root (2) partitions to loop devices and mount them"
  else
    say "  lay out $output ($size): bootfs (1, FAT32) and rootfs (2, ext4), as Raspberry Pi OS has them"
    say "  attach both to loop devices, make their file systems, unpack $rootfs into rootfs"
    say "  install systemd-boot, the root's kernel and a small initramfs into bootfs (UEFI boot)"
  fi
  say "  scripts/install.sh --root <root> --fleet-key $fleet_key${wheel:+ --wheel $wheel}${wheelhouse:+ --wheelhouse $wheelhouse}"
  [ -z "$config" ] || say "  install $config as /etc/kiosk/kiosk.toml"
  [ -z "$hostname" ] || say "  set the host name to $hostname"
  [ -z "$userconf" ] || say "  copy $userconf to the boot partition as userconf.txt"
  [ "$ssh" -eq 0 ] || say "  enable SSH"
  say "  unmount, detach, and print the image's SHA-256"
}

if [ "$dry_run" -eq 1 ]; then
  plan
  say "dry run: nothing was changed"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || die "needs root for loop devices and mounts (or use --dry-run)"
for tool in losetup partx mount umount; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install util-linux mount)"
done
if [ -n "$rootfs" ]; then
  for tool in sfdisk:fdisk mkfs.vfat:dosfstools mcopy:mtools mkfs.ext4:e2fsprogs cpio:cpio gzip:gzip; do
    command -v "${tool%%:*}" >/dev/null || die "${tool%%:*} is missing (apt-get install ${tool#*:})"
  done
fi

# -- With --rootfs: boot under UEFI -------------------------------------------
# A Pi boots from its firmware and its own kernel on the boot partition; the
# virtual machine standing in for it boots the root's Debian kernel through
# UEFI firmware and systemd-boot. That kernel has the virtio disk driver and
# ext4 only as modules, so it needs an initramfs. Debian's mkinitramfs, run
# under emulation, takes tens of minutes or hangs; this one is made here,
# natively: the root's static busybox, the modules that reach the root disk
# (with what modules.dep says they need), and an /init that loads them,
# mounts the root and switches to it.
initrd_modules=(virtio_pci virtio_blk crc32c_generic ext4)

make_initrd() { # make_initrd KVER OUT
  local kver=$1 out=$2 moddir=$mnt/lib/modules/$1 ird=$work/initrd m path order=()
  [ -f "$mnt/bin/busybox" ] || die "--rootfs: no /bin/busybox in the root (install busybox-static)"
  mkdir -p "$ird/bin" "$ird/lib/modules" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/root"
  cp "$mnt/bin/busybox" "$ird/bin/busybox"
  add_module() { # add_module PATH: its dependencies first, each module once
    local d
    while read -r d; do
      add_module "$d"
    done < <(awk -v p="$1:" '$1 == p {for (i = 2; i <= NF; i++) print $i}' "$moddir/modules.dep")
    case " ${order[*]} " in *" $1 "*) ;; *) order+=("$1") ;; esac
  }
  for m in "${initrd_modules[@]}"; do
    path=$(awk -v m="$m.ko:" '{n = split($1, a, "/")} a[n] == m {print substr($1, 1, length($1) - 1); exit}' \
      "$moddir/modules.dep")
    if [ -n "$path" ]; then
      add_module "$path"
    elif ! grep -q "/$m\.ko\$" "$moddir/modules.builtin"; then
      die "--rootfs: kernel $kver has no module $m"
    fi
  done
  : > "$ird/lib/modules/order"
  for path in "${order[@]}"; do
    cp "$moddir/$path" "$ird/lib/modules/"
    basename "$path" >> "$ird/lib/modules/order"
  done
  cat > "$ird/init" <<'INIT'
#!/bin/busybox sh
# The initramfs of scripts/build-image.sh --rootfs: load the modules that
# reach the root disk, mount the root read-only, and hand over to its init.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m" || echo "initramfs: cannot load $m"
done
root="" fstype=ext4 init=/sbin/init mode=ro
for arg in $(cat /proc/cmdline); do
  case $arg in
    root=*) root=${arg#root=} ;;
    rootfstype=*) fstype=${arg#rootfstype=} ;;
    init=*) init=${arg#init=} ;;
    rw) mode=rw ;;
  esac
done
dev="" tries=0
while [ "$tries" -lt 300 ]; do
  case $root in
    LABEL=*|UUID=*) dev=$(findfs "$root" 2>/dev/null) ;;
    *) dev=$root ;;
  esac
  [ -n "$dev" ] && [ -b "$dev" ] && break
  sleep 0.1
  tries=$((tries + 1))
done
if ! mount -t "$fstype" -o "$mode" "$dev" /root; then
  echo "initramfs: cannot mount the root file system ($root)"
  exec sh
fi
umount /proc /sys
mount --move /dev /root/dev
exec switch_root /root "$init"
INIT
  chmod 0755 "$ird/init"
  (cd "$ird" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -9n) > "$out"
  say "initramfs: busybox and ${#order[@]} modules ($(du -k "$out" | cut -f1) KiB)"
}

install_uefi_boot() {
  local kvers kver efi=$mnt/usr/lib/systemd/boot/efi/systemd-bootaa64.efi boot=$bootdir
  mapfile -t kvers < <(ls "$mnt/lib/modules" 2>/dev/null)
  [ ${#kvers[@]} -eq 1 ] ||
    die "--rootfs: expected one kernel in /lib/modules, found ${#kvers[@]} (install linux-image-arm64 in the root)"
  kver=${kvers[0]}
  [ -f "$mnt/boot/vmlinuz-$kver" ] || die "--rootfs: no /boot/vmlinuz-$kver in the root"
  [ -f "$efi" ] || die "--rootfs: no ${efi#"$mnt"} in the root (install systemd-boot-efi)"
  say "UEFI boot: systemd-boot, kernel $kver, initramfs"
  mkdir -p "$boot/EFI/BOOT" "$boot/loader/entries"
  cp "$efi" "$boot/EFI/BOOT/BOOTAA64.EFI"
  cp "$mnt/boot/vmlinuz-$kver" "$boot/vmlinuz"
  make_initrd "$kver" "$boot/initrd.img"
  printf 'timeout 0\ndefault kiosk.conf\n' > "$boot/loader/loader.conf"
  cat > "$boot/loader/entries/kiosk.conf" <<EOF
title Clock-in kiosk ($kver)
linux /vmlinuz
initrd /initrd.img
options root=LABEL=rootfs rootfstype=ext4 ro rootwait console=ttyAMA0 net.ifnames=0
EOF
  # The mounts Raspberry Pi OS has (it names the partitions by PARTUUID).
  cat > "$mnt/etc/fstab" <<'EOF'
LABEL=rootfs  /               ext4  defaults,noatime  0  1
LABEL=bootfs  /boot/firmware  vfat  defaults          0  2
EOF
}

work=$(mktemp -d)
mnt=$work/root
loops=()
done=0
cleanup() {
  set +e
  mountpoint -q "$mnt/boot/firmware" && umount "$mnt/boot/firmware"
  mountpoint -q "$mnt" && umount "$mnt"
  local l
  for l in "${loops[@]}"; do losetup -d "$l"; done
  loops=()
  rm -rf "$work"
  [ "$done" -eq 1 ] || rm -f "$output.partial"
}
trap cleanup EXIT

plan
if [ -n "$rootfs" ]; then
  say "laying out a $size disk like Raspberry Pi OS's"
  rm -f "$output.partial"
  truncate -s "$size" "$output.partial"
  # Raspberry Pi OS's layout: a 512 MiB FAT32 boot partition at 4 MiB, the
  # root after it. UEFI firmware finds EFI/BOOT/ on the FAT partition.
  printf 'label: dos\nstart=8192, size=1048576, type=c\nstart=1056768, type=83\n' |
    sfdisk --quiet "$output.partial" || die "sfdisk failed"
elif [[ $image == *.xz ]]; then
  say "copying the image"
  xz -dc "$image" > "$output.partial"
else
  say "copying the image"
  cp --sparse=always "$image" "$output.partial"
fi

# Partition offsets from the partition table; loop devices with an offset
# need no partition device nodes (which containers and chroots often lack).
attached=""
attach() { # attach NR: sets $attached to the loop device of partition NR
  local start sectors
  read -r start sectors < <(partx --show --bytes --noheadings --output START,SECTORS --nr "$1" "$output.partial") ||
    die "$image: no partition $1 (not a Raspberry Pi OS image?)"
  attached=$(losetup --find --show --offset $((start * 512)) --sizelimit $((sectors * 512)) "$output.partial")
  loops+=("$attached")
}
attach 1
boot_dev=$attached
attach 2
root_dev=$attached
if [ -n "$rootfs" ]; then
  mkfs.vfat -F 32 -n bootfs "$boot_dev" >/dev/null 2>&1 || die "mkfs.vfat failed"
  mkfs.ext4 -q -F -L rootfs "$root_dev"
fi
mkdir -p "$mnt"
mount "$root_dev" "$mnt"
if [ -n "$rootfs" ]; then
  say "unpacking $rootfs"
  tar -C "$mnt" --numeric-owner -xpf "$rootfs"
fi
[ -f "$mnt/etc/os-release" ] || die "$image: partition 2 has no /etc/os-release (not a Raspberry Pi OS root)"
grep -q 'VERSION_CODENAME=bookworm' "$mnt/etc/os-release" || say "warning: not Bookworm; the installer targets Bookworm"
mkdir -p "$mnt/boot/firmware"
if [ -z "$rootfs" ]; then
  bootdir=$mnt/boot/firmware
  mount "$boot_dev" "$bootdir"
else
  # Its files are gathered here and written into the FAT file system with
  # mtools at the end: no vfat mount needed (containers often lack it).
  bootdir=$work/bootfs
  mkdir -p "$bootdir"
  install_uefi_boot
fi

if [ -n "$config" ]; then
  install -d -m 0750 "$mnt/etc/kiosk"
  install -m 0640 "$config" "$mnt/etc/kiosk/kiosk.toml"
fi
args=(--root "$mnt" --fleet-key "$fleet_key")
[ -z "$wheel" ] || args+=(--wheel "$wheel")
[ -z "$wheelhouse" ] || args+=(--wheelhouse "$wheelhouse")
[ "$enable_gpio" -eq 0 ] || args+=(--enable-gpio)
"$here/scripts/install.sh" "${args[@]}"

if [ -n "$hostname" ]; then
  echo "$hostname" > "$mnt/etc/hostname"
  sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$hostname/" "$mnt/etc/hosts"
fi
[ -z "$userconf" ] || install -m 0600 "$userconf" "$bootdir/userconf.txt"
[ "$ssh" -eq 0 ] || : > "$bootdir/ssh"
if [ -n "$rootfs" ] && { [ -n "$userconf" ] || [ "$ssh" -eq 1 ]; }; then
  # Raspberry Pi OS's first boot reads them (userconfig, sshswitch); Debian has neither.
  say "warning: not Raspberry Pi OS: nothing in this root reads userconf.txt or ssh on the boot partition"
fi

if [ -n "$rootfs" ]; then
  MTOOLS_SKIP_CHECK=1 mcopy -s -i "$boot_dev" "$bootdir"/* ::/ || die "mcopy into bootfs failed"
fi
sync
done=1
cleanup
trap - EXIT
mv -f "$output.partial" "$output"
say "wrote $output"
sha256sum "$output"
