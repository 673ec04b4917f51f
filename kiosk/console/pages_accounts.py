"""Accounts (admins manage them; a viewer sees the list) and the audit log."""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, url_for

from ..errors import ConfigError
from .app import admin_only, remote
from .forms import AccountForm, AccountUpdateForm, UnlockForm

bp = Blueprint("accounts", __name__)


@bp.route("/accounts")
def index():
    accounts = g.console.accounts.all()
    updates = {a.username: AccountUpdateForm(prefix=a.username, role=a.role, disabled=a.disabled) for a in accounts}
    locked = {a.username: g.console.accounts.locked_until(a.username) for a in accounts}
    return render_template("accounts.html", accounts=accounts, form=AccountForm(), updates=updates, locked=locked,
                           unlock=UnlockForm())


@bp.route("/accounts", methods=["POST"])
@admin_only
def create():
    form = AccountForm()
    if form.validate_on_submit():
        try:
            g.console.accounts.create(form.username.data, form.password.data, form.role.data,
                                      actor=g.user.username, remote=remote())
            flash(f"Account {form.username.data} made ({form.role.data}).", "ok")
        except ConfigError as e:
            flash(str(e), "error")
    else:
        flash("; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items()), "error")
    return redirect(url_for(".index"))


@bp.route("/accounts/<name>", methods=["POST"])
@admin_only
def update(name: str):
    if g.console.accounts.get(name) is None:
        abort(404)
    form = AccountUpdateForm(prefix=name)
    if form.validate_on_submit():
        try:
            g.console.accounts.update(name, actor=g.user.username, remote=remote(), role=form.role.data,
                                      disabled=form.disabled.data, password=form.password.data or None)
            flash(f"Account {name} saved.", "ok")
        except ConfigError as e:
            flash(str(e), "error")
    else:
        flash("; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items()), "error")
    return redirect(url_for(".index"))


@bp.route("/accounts/<name>/unlock", methods=["POST"])
@admin_only
def unlock(name: str):
    if UnlockForm().validate_on_submit():
        g.console.accounts.unlock(name, actor=g.user.username, remote=remote())
        flash(f"Login {name} unlocked.", "ok")
    return redirect(url_for(".index"))


@bp.route("/audit")
def audit_log():
    return render_template("audit.html", rows=g.console.accounts.audit_log(limit=500))
