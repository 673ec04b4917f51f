"""What the console's tests share: a console on a fresh store, accounts, and logging in (not a test module)."""

from __future__ import annotations

import re
from pathlib import Path

from kiosk.console.accounts import Accounts
from kiosk.console.app import create_app
from kiosk.console.config import parse_console_config
from kiosk.console.service import open_console

ADMIN, VIEWER = "ada", "vic"
PASSWORD = "correct horse battery"


def console_config(tmp: Path, store_url: str, *, site: str = "elm-court", extra: str = ""):
    return parse_console_config(
        f'[console]\nstate_dir = "{tmp / "console"}"\nsite = "{site}"\ntimezone = "Asia/Shanghai"\n'
        f'login_failures = 3\n[store]\nurl = "{store_url}"\n[gallery]\nstate_dir = "{tmp / "gallery"}"\n'
        f'[broker]\nenabled = false\n{extra}')


def make_console(tmp: Path, store_url: str, **kw):
    (tmp / "console").mkdir(parents=True, exist_ok=True)
    console = open_console(console_config(tmp, store_url, **kw), publish=False)
    accounts = Accounts(console.store)
    accounts.create(ADMIN, PASSWORD, "admin", actor="test", remote="local")
    accounts.create(VIEWER, PASSWORD, "viewer", actor="test", remote="local")
    app = create_app(console)
    app.config["TESTING"] = True
    return console, app


def token(html: str) -> str:
    m = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def login(client, username: str, password: str = PASSWORD):
    page = client.get("/login").get_data(as_text=True)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token(page)})
