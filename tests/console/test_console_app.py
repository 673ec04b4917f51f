"""The console through Flask's test client: logins, sessions, lockout, roles, CSRF, the audit log."""

from __future__ import annotations

import json

import pytest

from console_kit import ADMIN, PASSWORD, VIEWER, login, make_console, token
from kiosk.errors import LoginRefused


@pytest.fixture
def console(tmp_path):
    console, app = make_console(tmp_path, f"sqlite:///{tmp_path / 'events.db'}")
    yield console, app
    console.close()


def test_pages_need_a_login(console):
    _, app = console
    c = app.test_client()
    r = c.get("/residents/")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")
    assert c.post("/accounts", data={}).status_code in (400, 401)


def test_login_and_logout_are_audited_with_where_from(console):
    con, app = console
    c = app.test_client()
    assert login(c, ADMIN).status_code == 302
    page = c.get("/").get_data(as_text=True)
    assert "ada (admin)" in page
    c.post("/logout", data={"csrf_token": token(page)})
    assert c.get("/").status_code == 302
    log = con.accounts.audit_log()
    assert [r["action"] for r in log][:2] == ["logout", "login"]
    assert log[0]["remote"] == "127.0.0.1" and log[0]["actor"] == ADMIN


def test_a_locked_out_login_stays_locked_even_with_the_right_password_and_after_a_restart(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    con, app = make_console(tmp_path, url)
    c = app.test_client()
    codes = [login(c, VIEWER, "wrong password!!").status_code for _ in range(3)]
    assert codes == [401, 401, 429]
    assert login(c, VIEWER).status_code == 429  # the right password: still locked
    con.close()
    from kiosk.console.app import create_app
    from kiosk.console.service import open_console
    from console_kit import console_config

    again = open_console(console_config(tmp_path, url), publish=False)  # a restart
    try:
        c2 = create_app(again).test_client()
        r = login(c2, VIEWER)
        assert r.status_code == 429 and "locked" in r.get_data(as_text=True)
        assert login(c2, ADMIN).status_code == 302  # another name is not locked
    finally:
        again.close()


def test_a_request_without_the_csrf_token_is_refused(console):
    con, app = console
    c = app.test_client()
    login(c, ADMIN)
    r = c.post("/accounts", data={"username": "eve", "role": "admin", "password": "x" * 20})
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
    assert con.accounts.get("eve") is None
    r = c.post("/login", data={"username": ADMIN, "password": PASSWORD})  # logging in needs one too
    assert r.status_code == 400


def test_a_viewer_cannot_change_anything_by_posting_forms_directly(console):
    con, app = console
    c = app.test_client()
    login(c, VIEWER)
    csrf = token(c.get("/residents/").get_data(as_text=True))
    for path, data in [("/accounts", {"username": "eve", "role": "admin", "password": "x" * 20}),
                       (f"/accounts/{VIEWER}", {f"{VIEWER}-role": "admin"}),
                       ("/residents/new", {"resident_id": "r1", "name": "R"}),
                       ("/residents/r1/edit", {"name": "R"}), ("/residents/r1/erase", {"confirm": "y"}),
                       ("/residents/r1/credential.png", {"door": "d", "minutes": "5"}),
                       ("/doors/provision", {}), ("/doors/door-1/reset.png", {"minutes": "5"}),
                       (f"/accounts/{ADMIN}/unlock", {})]:
        r = c.post(path, data={**data, "csrf_token": csrf})
        assert r.status_code == 403, path
    assert con.accounts.get("eve") is None and con.accounts.get(VIEWER).role == "viewer"
    page = c.get("/accounts").get_data(as_text=True)
    assert "Make the account" not in page and "Enroll a resident" not in c.get("/residents/").get_data(as_text=True)


def test_a_new_password_or_disabling_ends_the_sessions_signed_before(console):
    con, app = console
    c = app.test_client()
    login(c, VIEWER)
    assert c.get("/residents/").status_code == 200
    con.accounts.update(VIEWER, actor=ADMIN, remote="-", password="another password 1")
    assert c.get("/residents/").status_code == 302


def test_an_idle_session_expires_on_the_server(console, monkeypatch):
    con, app = console
    c = app.test_client()
    login(c, ADMIN)
    assert c.get("/").status_code == 200
    import time as _time

    real = _time.time
    monkeypatch.setattr(_time, "time", lambda: real() + 31 * 60)  # past idle_minutes = 30
    assert c.get("/").status_code == 302


def test_an_admin_makes_and_demotes_accounts_but_not_the_last_admin(console):
    con, app = console
    c = app.test_client()
    login(c, ADMIN)
    csrf = token(c.get("/accounts").get_data(as_text=True))
    c.post("/accounts", data={"username": "bea", "role": "viewer", "password": "long enough pw", "csrf_token": csrf})
    assert con.accounts.get("bea").role == "viewer"
    c.post(f"/accounts/{ADMIN}", data={f"{ADMIN}-role": "viewer", "csrf_token": csrf})
    assert con.accounts.get(ADMIN).role == "admin"  # the last admin stays one
    actions = [r["action"] for r in con.accounts.audit_log()]
    assert "account.create" in actions


def test_create_admin_reads_the_password_from_stdin_never_argv(tmp_path):
    import subprocess
    import sys

    from pathlib import Path

    conf = tmp_path / "console.toml"
    (tmp_path / "console").mkdir()
    conf.write_text(f'[console]\nstate_dir = "{tmp_path / "console"}"\n[store]\nurl = "sqlite:///events.db"\n'
                    f'[gallery]\nstate_dir = "{tmp_path / "gallery"}"\n[broker]\nenabled = false\n'
                    '[logging]\njournald = false\n')
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "kiosk.console.cli", "--config", str(conf), "create-admin",
                        "--username", "root-admin", "--password-stdin"], input="a long passphrase\n",
                       capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin"})
    assert r.returncode == 0, r.stderr
    from kiosk.backend.store import open_store
    from kiosk.console.accounts import Accounts

    with open_store(tmp_path / "console" / "events.db") as s:
        acc = Accounts(s)
        assert acc.get("root-admin").role == "admin"
        assert acc.login("root-admin", "a long passphrase", remote="t").username == "root-admin"
    r = subprocess.run([sys.executable, "-m", "kiosk.console.cli", "--config", str(conf), "create-admin",
                        "--username", "x", "--password", "secret"], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(repo), "PATH": "/usr/bin"})
    assert r.returncode == 2 and "unrecognized arguments: --password" in r.stderr


def test_doors_show_status_and_signed_version_and_the_ones_behind(console):
    import json
    import time

    from kiosk.sync.updates.admin import Ledger

    con, app = console
    now = time.time()
    status = {"state": "online", "time": now - 5, "outbox": {"depth": 7}, "versions": {"software": "0.1.0"},
              "gallery": {"version": 1}, "recognition": {"target_met": True, "residents": 40},
              "location": {"state": "VERIFIED"}}
    rows = [("door-1", status, {"version": 2, "result": "applied", "time": now}),
            ("door-2", {**status, "time": now - 3600}, {"version": 1, "result": "applied", "time": now - 4000}),
            ("door-3", {**status, "state": "offline"}, {"version": 1, "result": "refused", "time": now})]
    with con.store.transaction() as cur:
        for device, st, ack in rows:
            cur.execute(con.store.q("INSERT INTO console_doors (site, device, status, ack, heard_at) VALUES (?,?,?,?,?)"),
                        ["elm-court", device, json.dumps(st), json.dumps(ack), now])
    with con.residents.lock:  # the site's latest publication: version 2
        Ledger(con.residents.gallery, "elm-court").db.execute(
            "INSERT INTO gallery_publications(site, version, kind, update_id, digest, residents, published_at)"
            " VALUES ('elm-court', 2, 'delta', 'u2', 'd', 40, ?)", [now])
    c = app.test_client()
    login(c, VIEWER)
    page = c.get("/doors/").get_data(as_text=True)
    assert "elm-court/door-1</td><td>online" in page and ">7<" in page and "VERIFIED" in page
    assert "before version 2" in page  # door-1's status is older than the gallery it acknowledged
    assert "elm-court/door-2</td><td>offline" in page  # silent for an hour: offline whatever it last said
    behind = c.get("/doors/behind").get_data(as_text=True)
    assert "door-2" in behind and "door-3" in behind and "door-1" not in behind


def test_an_address_trying_many_names_is_locked_and_cannot_lock_another(console):
    """Failures per address too (four times a name's limit); a name spelling an address counts for nobody."""
    con, app = console
    acc = con.accounts
    for i in range(11):  # login_failures = 3: an address is locked at 12
        with pytest.raises(LoginRefused, match="wrong user name"):
            acc.login(f"guess-{i}", "wrong password!!", remote="203.0.113.9")
    with pytest.raises(LoginRefused, match="locked"):
        acc.login("guess-11", "wrong password!!", remote="203.0.113.9")
    with pytest.raises(LoginRefused, match="from this address"):
        acc.login(ADMIN, PASSWORD, remote="203.0.113.9")  # the right password, from that address: still locked
    assert acc.login(ADMIN, PASSWORD, remote="198.51.100.7").username == ADMIN  # from elsewhere: in
    for _ in range(5):  # typing another address's key as a user name counts only against one's own address
        with pytest.raises(LoginRefused):
            acc.login("address:198.51.100.7", "x", remote="192.0.2.1")
    assert acc.login(ADMIN, PASSWORD, remote="198.51.100.7").username == ADMIN


@pytest.mark.parametrize("said", [
    {"time": 1e300},  # a clock no datetime holds
    {"time": float("inf"), "gallery": {"version": float("inf")}},  # Python's json reads Infinity
    {"recognition": {"target_met": ["yes"], "residents": "many"}},
    {"recognition": {"target_met": "maybe"}, "outbox": {"depth": {"n": 1}}, "versions": {"software": ["1"]}},
    {"state": {"online": True}, "location": {"state": 7}, "outbox": {"depth": True}},
    {"time": 10**400, "outbox": {"depth": 10**400}, "recognition": {"residents": -(10**400)}},
    "deep",  # filed as it came before: parsed on the publisher's thread, too deep for a page's
])
def test_one_doors_odd_status_does_not_take_the_doors_page_from_the_others(console, said):
    """A door's status is unsigned, and any door can send one: shown when it makes sense, never a broken page for
    every door (the doors page and the doors behind)."""
    import json
    import time

    con, app = console
    now = time.time()
    good = {"state": "online", "time": now - 5, "outbox": {"depth": 7}, "versions": {"software": "0.1.0"},
            "gallery": {"version": 1}, "recognition": {"target_met": True, "residents": 40},
            "location": {"state": "VERIFIED"}}
    odd = json.dumps({**good, **said}) if said != "deep" else '{"x": ' + "[" * 980 + "]" * 980 + "}"
    with con.store.transaction() as cur:
        for device, text in (("door-1", json.dumps(good)), ("door-9", odd)):
            cur.execute(con.store.q("INSERT INTO console_doors (site, device, status, ack, heard_at)"
                                    " VALUES (?,?,?,?,?)"),
                        ["elm-court", device, text, json.dumps({"version": 1, "result": "applied"}), now])
    c = app.test_client()
    login(c, VIEWER)
    page = c.get("/doors/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "elm-court/door-1</td><td>online" in text and ">7<" in text and "elm-court/door-9" in text
    assert c.get("/doors/behind").status_code == 200


def test_what_is_filed_of_a_status_is_what_the_pages_show():
    from kiosk.console.doors import shown

    deep: list = []
    for _ in range(979):
        deep = [deep]
    status = {"state": "online", "time": 1.8e9, "outbox": {"depth": 3, "oldest": deep}, "versions": {"software": deep},
              "recognition": {"target_met": True, "residents": 10**400}, "location": {"state": "VERIFIED"},
              "gallery": {"version": 4, "digest": "d" * 64}, "x": deep}
    assert shown(status) == {"state": "online", "time": 1.8e9, "outbox": {"depth": 3},
                             "recognition": {"target_met": True}, "location": {"state": "VERIFIED"},
                             "gallery": {"version": 4}}
