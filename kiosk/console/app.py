"""The console's Flask application: sessions, CSRF, roles, the audit trail's "who and from where".

Sessions are Flask's signed cookies (HttpOnly, SameSite=Lax, Secure behind
TLS), and they are checked on the server at every request too: the account
must still exist and be enabled, its ``session_epoch`` (raised by a new
password or by disabling it) must match the one signed into the cookie, the
login must be younger than ``session_hours`` and the last request younger
than ``idle_minutes``. Every POST carries Flask-WTF's CSRF token; a
``viewer`` gets 403 on every POST except logging out.
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import datetime

from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect

from ..cliopts import package_version
from ..errors import LoginRefused
from .forms import LoginForm, LogoutForm
from .service import Console

log = logging.getLogger(__name__)

#: Pages anyone may open without logging in.
PUBLIC = {"login", "static", "health"}


def create_app(console: Console) -> Flask:
    cc = console.config.console
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=console.session_key,
        SESSION_COOKIE_NAME="kiosk_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=cc.behind_proxy,
        PERMANENT_SESSION_LIFETIME=cc.session_hours * 3600,
        MAX_CONTENT_LENGTH=int(cc.max_upload_mb * 1024 * 1024),
        WTF_CSRF_TIME_LIMIT=cc.session_hours * 3600,
    )
    if cc.behind_proxy:  # one reverse proxy in front: its X-Forwarded-For/-Proto are the client's
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)
    app.extensions["console"] = console
    CSRFProtect(app)

    @app.before_request
    def _who():
        g.console = console
        g.user = _session_user(console)
        if g.user is None and request.endpoint not in PUBLIC:
            if request.method == "GET":
                return redirect(url_for("login", next=request.full_path if request.query_string else request.path))
            abort(401)
        return None

    @app.after_request
    def _headers(resp):
        resp.headers.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                                "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if g.get("user") is not None:
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @app.errorhandler(CSRFError)
    def _csrf(e):
        return render_template("error.html", code=400, message=f"Refused: {e.description} Reload the page and try "
                               "again."), 400

    for code, message in ((401, "Log in first."), (403, "Your role may only read."), (404, "Not found."),
                          (413, "The upload is too large.")):
        app.register_error_handler(code, functools.partial(_error, code=code, message=message))

    @app.context_processor
    def _globals():
        return {"user": g.get("user"), "site": console.site, "version": package_version(),
                "logout_form": LogoutForm(), "when": when, "day": day}

    @app.route("/health")
    def health():
        return {"ok": True}

    @app.route("/login", methods=["GET", "POST"])
    def login():
        form = LoginForm()
        if form.validate_on_submit():
            try:
                account = console.accounts.login(form.username.data, form.password.data, remote=remote())
            except LoginRefused as e:
                flash(str(e), "error")
                return render_template("login.html", form=form), 429 if e.locked_until else 401
            session.clear()
            session.permanent = True
            now = time.time()
            session.update(user=account.username, epoch=account.session_epoch, login_at=now, seen_at=now)
            target = request.args.get("next", "")
            return redirect(target if target.startswith("/") and not target.startswith("//") else url_for("home"))
        return render_template("login.html", form=form)

    @app.route("/logout", methods=["POST"])
    def logout():
        if LogoutForm().validate_on_submit():
            console.accounts.audit(g.user.username, "logout", g.user.username, "", remote())
        session.clear()
        return redirect(url_for("login"))

    from . import pages_accounts, pages_checkins, pages_doors, pages_proposals, pages_residents

    for bp in (pages_residents.bp, pages_doors.bp, pages_checkins.bp, pages_accounts.bp, pages_proposals.bp):
        app.register_blueprint(bp)

    @app.route("/")
    def home():
        return pages_checkins.overview()

    return app


def _error(e, code: int, message: str):
    return render_template("error.html", code=code, message=message), code


def _session_user(console: Console):
    name = session.get("user")
    if not name:
        return None
    cc = console.config.console
    now = time.time()
    account = console.accounts.get(name)
    if (account is None or account.disabled or account.session_epoch != session.get("epoch")
            or now - float(session.get("login_at", 0)) > cc.session_hours * 3600
            or now - float(session.get("seen_at", 0)) > cc.idle_minutes * 60):
        session.clear()
        return None
    if not request.path.endswith(".json"):  # the live page's polling does not keep an idle session alive
        session["seen_at"] = now
    return account


def remote() -> str:
    return request.remote_addr or "-"


def admin_only(view):
    """A change: admins only (403 for a viewer, whether through the page or a form posted directly)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if g.user is None or not g.user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapper


def audit(action: str, target: str, detail: str = "") -> None:
    g.console.accounts.audit(g.user.username, action, target, detail, remote())


def when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, g.console.tz).astimezone(g.console.tz).strftime("%Y-%m-%d %H:%M:%S")


def day(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, g.console.tz).astimezone(g.console.tz).strftime("%Y-%m-%d")
