#!/usr/bin/env bash
# Install the clock-in kiosk on Raspberry Pi OS Bookworm (or Debian 12).
#
#   sudo scripts/install.sh                    install on this machine
#   scripts/install.sh --root DIR              stage into DIR (an image's root):
#                                              files only, the host is not touched
#   /opt/kiosk/libexec/install.sh --firstboot  finish a staged install (run by
#                                              kiosk-firstboot.service)
#
# Safe to run again: existing config is kept, everything else is brought up
# to date. See docs/appliance.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: install.sh [--root DIR] [--wheel FILE] [--wheelhouse DIR] [--fleet-key FILE]
                  [--enable-gpio] [--dry-run] [--firstboot]

  --root DIR         stage the kiosk into DIR instead of this machine: lays down
                     the unit, config, users and wheels; runs no apt, pip or
                     systemctl (they run at first boot, from kiosk-firstboot)
  --wheel FILE       the kiosk wheel to install (default: build one from this
                     source tree)
  --wheelhouse DIR   wheels for every dependency, for an install without network
                     (pip download --platform ... -d DIR kiosk-*.whl)
  --fleet-key FILE   the fleet's root public key, installed as
                     /etc/kiosk/fleet-root.pub (signed provisioning and updates)
  --enable-gpio      set gpio.enabled = true in a newly created config
  --dry-run          print what would be done on this machine, change nothing
  --firstboot        finish a staged install on the device itself
  -h, --help         this text
EOF
}

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

here=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/kiosk
root=""
wheel=""
wheelhouse=""
fleet_key=""
enable_gpio=0
dry_run=0
firstboot=0

# System packages the kiosk needs on any Debian 12 (Bookworm) system.
# python3-systemd (systemd-python, seen through the venv's system site
# packages) sends the daemon's log records to journald with their priority
# and fields, so that `journalctl -u kiosk -p err` finds its errors.
apt_packages=(python3-venv python3-pip python3-systemd libzbar0 ca-certificates)
# Raspberry Pi OS packages the daemon uses from the system: picamera2 and
# libcamera are only packaged by apt (the venv sees them through
# --system-site-packages), lgpio is gpiozero's pin library on Bookworm. Only
# Raspberry Pi OS's archive has them: elsewhere (plain Debian, as in the arm64
# checks) they are skipped with a warning, and the camera must be an OpenCV
# device or a stream.
pi_packages=(python3-picamera2 python3-lgpio)

while [ $# -gt 0 ]; do
  case $1 in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
    --root=*) root=${1#*=}; shift ;;
    --wheel) [ $# -ge 2 ] || die "--wheel needs a file"; wheel=$2; shift 2 ;;
    --wheel=*) wheel=${1#*=}; shift ;;
    --wheelhouse) [ $# -ge 2 ] || die "--wheelhouse needs a directory"; wheelhouse=$2; shift 2 ;;
    --wheelhouse=*) wheelhouse=${1#*=}; shift ;;
    --fleet-key) [ $# -ge 2 ] || die "--fleet-key needs a file"; fleet_key=$2; shift 2 ;;
    --fleet-key=*) fleet_key=${1#*=}; shift ;;
    --enable-gpio) enable_gpio=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --firstboot) firstboot=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

if [ -n "$root" ]; then
  [ -d "$root" ] || die "--root $root: no such directory"
  root=$(cd "$root" && pwd)
  [ "$root" != / ] || die "--root /: leave out --root to install on this machine"
  [ "$firstboot" -eq 0 ] || die "--firstboot runs on the device itself, not with --root"
fi
[ -z "$wheel" ] || [ -f "$wheel" ] || die "--wheel $wheel: no such file"
[ -z "$wheelhouse" ] || [ -d "$wheelhouse" ] || die "--wheelhouse $wheelhouse: no such directory"
[ -z "$fleet_key" ] || [ -f "$fleet_key" ] || die "--fleet-key $fleet_key: no such file"
if [ -z "$root" ] && [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  die "installing on this machine needs root (sudo), or use --root DIR or --dry-run"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

staging=0
[ -z "$root" ] || staging=1
R=${root}   # prefix of every path written; empty on the host

# Run a command that changes this machine; with --root or --dry-run, say it.
host() {
  if [ "$staging" -eq 1 ] || [ "$dry_run" -eq 1 ]; then
    say "would run: $*"
  else
    "$@"
  fi
}

# Lay down one file with a mode, replacing it only when it changed: the new
# file is flushed to the disk before it is renamed over the old one, and the
# folder after, so that a power cut leaves one or the other, whole.
put() { # put MODE SRC DEST
  local mode=$1 src=$2 dest=$R$3
  if [ "$dry_run" -eq 1 ]; then say "would install $3 (mode $mode)"; return; fi
  mkdir -p "$(dirname "$dest")"
  if ! cmp -s "$src" "$dest" 2>/dev/null; then
    install -m "$mode" "$src" "$dest.tmp.$$"
    sync "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
    sync "$(dirname "$dest")"
  fi
  chmod "$mode" "$dest"
}

# Lay down a file from text given on stdin.
put_text() { # put_text MODE DEST
  local tmp=$work/text
  cat > "$tmp"
  put "$1" "$tmp" "$2"
}

dir() { # dir MODE PATH
  if [ "$dry_run" -eq 1 ]; then say "would create $2/ (mode $1)"; return; fi
  mkdir -p "$R$2"
  chmod "$1" "$R$2"
}

share_file() { # where a packaged file is: the source tree, or the staged copy
  local in_tree=$here/$1 staged
  staged=$prefix/share/$(basename "$1")
  if [ -f "$in_tree" ]; then echo "$in_tree"; elif [ -f "$staged" ]; then echo "$staged"; else
    die "cannot find $1 (looked in $here and $prefix/share)"
  fi
}

# ---------------------------------------------------------------- packages --
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
known_to_apt() { apt-cache --quiet=2 policy "$1" 2>/dev/null | grep -q '^ *Candidate: [^(]'; }

install_apt() {
  local missing=() pi_missing=() have=() p updated=0
  for p in "${apt_packages[@]}"; do installed "$p" || missing+=("$p"); done
  for p in "${pi_packages[@]}"; do installed "$p" || pi_missing+=("$p"); done
  if [ "$staging" -eq 1 ]; then
    say "would run: apt-get install ${apt_packages[*]} ${pi_packages[*]} (at first boot)"
    return
  fi
  if [ ${#missing[@]} -eq 0 ] && [ ${#pi_missing[@]} -eq 0 ]; then
    say "system packages already installed"
    return
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    host apt-get update -qq
    updated=1
    host env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  [ ${#pi_missing[@]} -gt 0 ] || return 0
  if [ "$updated" -eq 0 ] && ! known_to_apt "${pi_missing[0]}"; then
    host apt-get update -qq || say "warning: apt-get update failed (no network?)"
  fi
  for p in "${pi_missing[@]}"; do
    if [ "$dry_run" -eq 1 ] || known_to_apt "$p"; then
      have+=("$p")
    else
      say "warning: skipping $p: not in this system's package archive (not Raspberry Pi OS?)"
    fi
  done
  [ ${#have[@]} -eq 0 ] ||
    host env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${have[@]}"
}

# ------------------------------------------------------------ user, dirs ----
install_users_and_dirs() {
  put_text 0644 /etc/sysusers.d/kiosk.conf <<'EOF'
# The kiosk daemon's own user, with the camera (video) and GPIO groups.
u kiosk - "Clock-in kiosk" /var/lib/kiosk /usr/sbin/nologin
m kiosk video
m kiosk gpio
EOF
  put_text 0644 /etc/tmpfiles.d/kiosk.conf <<'EOF'
# Ownership the kiosk needs; applied at every boot by systemd-tmpfiles.
d /var/lib/kiosk 0700 kiosk kiosk -
z /etc/kiosk 0750 root kiosk -
z /etc/kiosk/kiosk.toml 0640 root kiosk -
z /etc/kiosk/fleet-root.pub 0644 root root -
EOF
  dir 0755 "$prefix"
  dir 0750 /etc/kiosk
  dir 0700 /var/lib/kiosk
  if [ "$staging" -eq 1 ]; then
    if [ -f "$R/etc/passwd" ] && command -v systemd-sysusers >/dev/null; then
      # An OS tree: create the user in its /etc/passwd now.
      [ "$dry_run" -eq 1 ] || systemd-sysusers --root "$R" "$R/etc/sysusers.d/kiosk.conf"
    else
      say "would run: systemd-sysusers /etc/sysusers.d/kiosk.conf (at first boot)"
    fi
  else
    host systemd-sysusers /etc/sysusers.d/kiosk.conf
    host systemd-tmpfiles --create /etc/tmpfiles.d/kiosk.conf
  fi
}

# ---------------------------------------------------------------- config ----
install_config() {
  local src
  src=$(share_file config/kiosk.toml)
  if [ -e "$R/etc/kiosk/kiosk.toml" ]; then
    say "keeping existing /etc/kiosk/kiosk.toml"
  else
    local tmp=$work/kiosk.toml
    if [ "$enable_gpio" -eq 1 ]; then
      sed '/^\[gpio\]/,/^\[/ s/^enabled = false$/enabled = true/' "$src" > "$tmp"
    else
      cp "$src" "$tmp"
    fi
    put 0640 "$tmp" /etc/kiosk/kiosk.toml
  fi
  if [ -n "$fleet_key" ]; then
    put 0644 "$fleet_key" /etc/kiosk/fleet-root.pub
  fi
}

# ---------------------------------------------------------- the package -----
build_wheel() {
  # PEP 517, in an isolated build environment: the host needs no setuptools
  # or wheel of its own.
  local out=$work/wheel
  mkdir -p "$out"
  "${PYTHON:-python3}" -m pip wheel -q --disable-pip-version-check --no-deps -w "$out" "$here" >&2
  ls "$out"/kiosk-*.whl
}

# The packages the lock pins that have no wheel in a folder ("" if none).
lock_missing() { # lock_missing PYTHON LOCK DIR
  "$1" -c '
import pathlib, re, sys
norm = lambda n: re.sub(r"[-_.]+", "_", n).lower()
pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", pathlib.Path(sys.argv[1]).read_text(), re.M)
have = {norm(w.name.split("-")[0]) for w in pathlib.Path(sys.argv[2]).glob("*.whl")}
print(" ".join(p for p in pins if norm(p) not in have))
' "$2" "$3"
}

stage_wheels() {
  if [ -z "$wheel" ]; then
    [ -f "$here/pyproject.toml" ] || die "no --wheel given and $here is not a source tree"
    wheel=$(build_wheel)
  fi
  dir 0755 "$prefix/wheels"
  dir 0755 "$prefix/share"
  if [ "$dry_run" -eq 0 ]; then
    rm -f "$R$prefix"/wheels/kiosk-*.whl  # one kiosk wheel: the one being installed
  fi
  put 0644 "$wheel" "$prefix/wheels/$(basename "$wheel")"
  put 0644 "$(share_file requirements.lock)" "$prefix/share/requirements.lock"
  if [ -n "$wheelhouse" ]; then
    local w
    for w in "$wheelhouse"/*.whl; do
      [ -e "$w" ] || continue
      put 0644 "$w" "$prefix/wheels/$(basename "$w")"
    done
  fi
  # face-recognition-models has no wheel on PyPI: without a wheelhouse, the
  # one the lock pins is built here (once, cached), not by pip at install.
  if ! compgen -G "$R$prefix/wheels/face_recognition_models-*.whl" >/dev/null; then
    if [ "$dry_run" -eq 1 ]; then
      say "would run: scripts/wheelhouse --models-only (the face-recognition-models wheel)"
    else
      local models
      models=$("$here/scripts/wheelhouse" --models-only "${KIOSK_WHEEL_CACHE:-$HOME/.cache/kiosk-wheels}")
      put 0644 "$models" "$prefix/wheels/$(basename "$models")"
    fi
  fi
}

install_venv() {
  local venv=$prefix/venv lock=$prefix/share/requirements.lock pip_args=() missing
  if [ "$staging" -eq 1 ] || [ "$dry_run" -eq 1 ]; then
    local when=""
    [ "$staging" -eq 0 ] || when=" (at first boot)"
    say "would run: python3 -m venv --system-site-packages $venv$when"
    say "would run: $venv/bin/pip install --require-hashes --only-binary=:all: -r $lock$when"
    say "would run: $venv/bin/pip install --no-deps $prefix/wheels/kiosk-*.whl$when"
    return
  fi
  [ -x "$venv/bin/python" ] || host python3 -m venv --system-site-packages "$venv"
  # Exactly the versions of the lock, each checked against its hash, wheels
  # only: every kiosk runs the stack CI tests (numpy 2 and OpenCV 5; the
  # lock's simplejpeg, built for numpy 2, shadows Raspberry Pi OS's build for
  # picamera2: see docs/appliance.md).
  pip_args=(--disable-pip-version-check --require-hashes --only-binary=:all: --find-links "$prefix/wheels")
  missing=$(lock_missing "$venv/bin/python" "$lock" "$prefix/wheels")
  if [ -z "$missing" ]; then
    pip_args+=(--no-index)  # a complete wheelhouse: no network needed
    say "installing the locked packages from $prefix/wheels (offline)"
  else
    say "installing the locked packages from the package index (no wheel here for: $missing)"
  fi
  host "$venv/bin/pip" install -q "${pip_args[@]}" -r "$lock"
  host "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-index --force-reinstall \
    "$(ls "$prefix"/wheels/kiosk-*.whl)"
}

# ------------------------------------------------------------- the units ----
firstboot_unit() {
  cat <<'EOF'
[Unit]
Description=Clock-in kiosk: finish installing on first boot
Documentation=file:/opt/kiosk/share/docs/appliance.md
Wants=network-online.target
After=network-online.target time-sync.target
Before=kiosk.service
ConditionPathExists=!/opt/kiosk/venv/bin/kiosk

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/opt/kiosk/libexec/install.sh --firstboot
TimeoutStartSec=30min

[Install]
WantedBy=multi-user.target
EOF
}

install_units() {
  put 0644 "$(share_file systemd/kiosk.service)" /etc/systemd/system/kiosk.service
  dir 0755 "$prefix/share"
  dir 0755 "$prefix/libexec"
  put 0644 "$(share_file systemd/kiosk.service)" "$prefix/share/kiosk.service"
  put 0644 "$(share_file config/kiosk.toml)" "$prefix/share/kiosk.toml"
  if [ -f "$here/README.md" ]; then
    put 0644 "$here/README.md" "$prefix/share/README.md"
  fi
  if [ -d "$here/docs" ]; then
    # The pages the README links to, so that the installed kiosk explains itself.
    dir 0755 "$prefix/share/docs"
    for page in "$here"/docs/*.md; do
      put 0644 "$page" "$prefix/share/docs/$(basename "$page")"
    done
  fi
  [ ! -x "$here/scripts/install-commands" ] || KIOSK_ROOT=$R KIOSK_DRY_RUN=$dry_run "$here/scripts/install-commands" "$prefix/venv"
  if [ "$0" != "$R$prefix/libexec/install.sh" ]; then
    put 0755 "$0" "$prefix/libexec/install.sh"
  fi
  if [ "$staging" -eq 1 ]; then
    firstboot_unit | put_text 0644 /etc/systemd/system/kiosk-firstboot.service
    # Enabled the way systemctl enable would; kiosk-firstboot enables
    # kiosk.service once the venv exists.
    if [ "$dry_run" -eq 0 ]; then
      mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
      ln -sfn /etc/systemd/system/kiosk-firstboot.service \
        "$R/etc/systemd/system/multi-user.target.wants/kiosk-firstboot.service"
    fi
  else
    host systemctl daemon-reload
    host systemctl enable kiosk.service
  fi
}

# ------------------------------------------------------------------ main ----
if [ "$firstboot" -eq 1 ]; then
  say "finishing the staged install"
  install_apt
  install_users_and_dirs
  install_venv
  host systemctl disable kiosk-firstboot.service
  host systemctl enable kiosk.service
  if [ -d /run/systemd/system ]; then
    host systemctl start --no-block kiosk.service
  else
    # Finished inside an image's root (a chroot), not on the booted device.
    say "systemd is not running here: kiosk.service starts at the next boot"
  fi
  say "done: kiosk.service enabled"
  exit 0
fi

install_apt
install_users_and_dirs
install_config
stage_wheels
install_venv
install_units
if [ "$staging" -eq 1 ]; then
  say "staged into $root: kiosk-firstboot.service finishes the install on first boot"
elif [ "$dry_run" -eq 1 ]; then
  say "dry run: nothing was changed"
else
  say "installed. Edit /etc/kiosk/kiosk.toml, then: systemctl restart kiosk; kiosk selftest"
fi
