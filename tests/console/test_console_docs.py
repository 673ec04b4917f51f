"""docs/console.md, run: the site's config parses, the first admin is made as the page says, Caddy takes the
reverse proxy's config, the backup commands copy a live store and enrollment database, the install names
what exists."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tomllib

import pytest

from harness.docs import REPO, docs_snippet, sh_lines
from kiosk.backend.pgurl import check_store_url
from kiosk.console.config import parse_console_config


def test_the_sites_config_parses_and_its_store_url_is_one_the_store_takes(tmp_path):
    cfg = parse_console_config(docs_snippet("console-toml"), "docs/console.md")
    assert cfg.console.site == "elm-court" and cfg.console.behind_proxy
    (tmp_path / "pg-ca.pem").write_text("a CA certificate\n")
    check_store_url(cfg.store.url.replace("/etc/kiosk/pg-ca.pem", str(tmp_path / "pg-ca.pem")))


def test_every_key_is_documented_in_config_console_toml():
    """The shipped file holds every key with its default (the model's own defaults)."""
    from kiosk.console.config import ConsoleConfig

    shipped = tomllib.loads((REPO / "config" / "console.toml").read_text())
    model = ConsoleConfig().model_dump(mode="json")
    for section, keys in model.items():
        assert set(shipped[section]) == set(keys), section
        for k, v in keys.items():
            assert shipped[section][k] == v, f"[{section}] {k}"


def test_the_first_admin_is_made_as_the_page_says(tmp_path):
    conf = tmp_path / "console.toml"
    conf.write_text(f'[console]\nstate_dir = "{tmp_path}"\n[store]\nurl = "sqlite:///events.db"\n'
                    f'[gallery]\nstate_dir = "{tmp_path / "gallery"}"\n[logging]\njournald = false\n')
    bin_dir = tmp_path / "bin"  # the command as pip installs it
    bin_dir.mkdir()
    (bin_dir / "kiosk-console").write_text(f"#!/bin/sh\nexec {sys.executable} -m kiosk.console.cli \"$@\"\n")
    (bin_dir / "kiosk-console").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KIOSK_CONSOLE_CONFIG": str(conf),
           "PYTHONPATH": str(REPO)}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", docs_snippet("console-first-admin")], env=env, cwd=tmp_path,
                       input="a long passphrase\na long passphrase\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "account ada made (admin)" in r.stdout
    from kiosk.backend.store import open_store
    from kiosk.console.accounts import Accounts

    with open_store(tmp_path / "events.db") as s:
        assert Accounts(s).login("ada", "a long passphrase", remote="t").role == "admin"


def test_caddy_validates_the_reverse_proxy_config(tmp_path):
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.fail("caddy is not installed (scripts/bootstrap installs it)")
    f = tmp_path / "Caddyfile"
    f.write_text(docs_snippet("console-caddy"))
    r = subprocess.run([caddy, "validate", "--adapter", "caddyfile", "--config", str(f)], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)})
    assert r.returncode == 0 and "Valid configuration" in r.stdout + r.stderr, r.stderr
    f.write_text(docs_snippet("console-caddy").replace("reverse_proxy", "reverse_proxi"))
    r = subprocess.run([caddy, "validate", "--adapter", "caddyfile", "--config", str(f)], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)})
    assert r.returncode != 0  # the check can fail


def test_the_backup_copies_a_live_store_and_enrollment_database(postgres_url, enrolled_state, tmp_path):
    from kiosk.backend.store import open_store
    from kiosk.console.accounts import Accounts

    with open_store(postgres_url) as s:
        Accounts(s).create("ada", "a long passphrase", "admin", actor="test", remote="-")
    gallery = tmp_path / "gallery"
    shutil.copytree(enrolled_state, gallery)
    out = tmp_path / "backup"
    out.mkdir()
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", docs_snippet("console-backup")], cwd=out,
                       env={**os.environ, "STORE_URL": postgres_url, "GALLERY_DIR": str(gallery)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("store.dump", "gallery.db", "template.key"):
        assert (out / name).stat().st_mode & 0o077 == 0, name
    with sqlite3.connect(out / "gallery.db") as db:
        assert db.execute("SELECT count(*) FROM residents").fetchone()[0] == 6
    listing = subprocess.run(["pg_restore", "--list", str(out / "store.dump")], capture_output=True, text=True)
    assert "console_accounts" in listing.stdout and "events" in listing.stdout


@pytest.mark.slow
def test_the_install_runs(tmp_path):
    """docs/console.md's install, run line by line with its paths moved under tmp_path (/opt/kiosk/venv is a new
    venv, /etc a folder; the package, unit and config are the repository's): kiosk-console is there, with the
    enrolment stack, and the keys land 0600 in a 0700 folder."""
    venv, etc = tmp_path / "venv", tmp_path / "etc"
    (etc / "systemd" / "system").mkdir(parents=True)
    (etc / "kiosk").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    for name in ("admin.jwks", "mqtt-client.key"):
        (work / name).write_text("a key\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # nothing of the test venv
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    for line in sh_lines(docs_snippet("console-install")):
        line = (line.replace("/opt/kiosk/venv", str(venv)).replace("/etc/", f"{etc}/")
                .replace("'.[", f"'{REPO}[").replace(" systemd/", f" {REPO}/systemd/").replace(" config/", f" {REPO}/config/"))
        r = subprocess.run(["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{line}:\n{r.stdout[-2000:]}{r.stderr[-3000:]}"
    r = subprocess.run([venv / "bin" / "kiosk-console", "--help"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "kiosk-console" in r.stdout, r.stderr
    for module in ("flask_wtf", "argon2", "waitress", "dlib", "cv2", "psycopg", "matplotlib"):
        r = subprocess.run([venv / "bin" / "python", "-c", f"import {module}"], env=env, capture_output=True, text=True)
        assert r.returncode == 0, (module, r.stderr)
    assert (etc / "systemd" / "system" / "kiosk-console.service").is_file()
    assert (etc / "kiosk" / "console.toml").read_text() == (REPO / "config" / "console.toml").read_text()
    keys = etc / "kiosk" / "console"
    assert keys.stat().st_mode & 0o777 == 0o700
    for name in ("admin.jwks", "mqtt-client.key"):
        assert (keys / name).stat().st_mode & 0o777 == 0o600, name