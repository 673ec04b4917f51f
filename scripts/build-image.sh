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
set -euo pipefail

usage() {
  cat <<'EOF'
usage: build-image.sh --image FILE --fleet-key FILE --output FILE [options]

  --image FILE       Raspberry Pi OS Lite image (.img, or .img.xz)
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
image="" fleet_key="" output="" wheel="" wheelhouse="" config="" hostname="" userconf=""
enable_gpio=0 ssh=0 force=0 dry_run=0

need_arg() { [ "$2" -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case $1 in
    --image) need_arg "$1" $#; image=$2; shift 2 ;;
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

[ -n "$image" ] || die "--image is required"
[ -n "$fleet_key" ] || die "--fleet-key is required"
[ -n "$output" ] || die "--output is required"
[ -f "$image" ] || die "--image $image: no such file"
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
case $image in
  *.img|*.img.xz) ;;
  *) die "--image $image: expected a .img or .img.xz file" ;;
esac
if [ -e "$output" ] && [ "$force" -eq 0 ]; then
  die "--output $output exists (use --force to overwrite)"
fi
[ "$(realpath -m "$output")" != "$(realpath "$image")" ] || die "--output must differ from --image"

plan() {
  say "plan:"
  say "  copy $image to $output"
  say "  attach its boot (1) and root (2) partitions to loop devices and mount them"
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
say "copying the image"
if [[ $image == *.xz ]]; then
  xz -dc "$image" > "$output.partial"
else
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
mkdir -p "$mnt"
mount "$root_dev" "$mnt"
[ -f "$mnt/etc/os-release" ] || die "$image: partition 2 has no /etc/os-release (not a Raspberry Pi OS root)"
grep -q 'VERSION_CODENAME=bookworm' "$mnt/etc/os-release" || say "warning: not Bookworm; the installer targets Bookworm"
mkdir -p "$mnt/boot/firmware"
mount "$boot_dev" "$mnt/boot/firmware"

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
[ -z "$userconf" ] || install -m 0600 "$userconf" "$mnt/boot/firmware/userconf.txt"
[ "$ssh" -eq 0 ] || : > "$mnt/boot/firmware/ssh"

sync
done=1
cleanup
trap - EXIT
mv -f "$output.partial" "$output"
say "wrote $output"
sha256sum "$output"
