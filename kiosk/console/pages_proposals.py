"""The doors' proposals (enrollment at the door, door templates) and the residents' door templates.

The same review as ``kiosk-admin gallery review`` (:mod:`kiosk.review`): each pending proposal opened
with the admin's key the console holds and checked; an admin approves or rejects one, or has the policy decide
every pending door template; door templates are listed and revoked. Every decision is audited and published.
"""

from __future__ import annotations

import logging

from flask import Blueprint, abort, flash, g, redirect, render_template, url_for

from .. import review
from ..enrollment.proposal import DOOR_TEMPLATE
from ..sync import keys as keymod
from .app import admin_only, audit
from .forms import DecideForm
from .pages_residents import _published
from .publishing import site_devices

log = logging.getLogger(__name__)
bp = Blueprint("proposals", __name__, url_prefix="/proposals")


def _pending() -> list[review.Pending]:
    c = g.console
    ring = keymod.KeyRing(site_devices(c.config.path(c.config.keys.devices), c.site).values())
    return review.pending(c.store, c.site, c.admin_key, ring)


def _policy():
    return review.policy_for(g.console.config.kiosk_config().match, g.console.residents.gallery)


@bp.route("/")
def index():
    if g.console.admin_key is None:
        return render_template("proposals.html", entries=[], keyless=True, form=DecideForm())
    return render_template("proposals.html", entries=_pending(), keyless=False, form=DecideForm())


def _entry(key: str) -> review.Pending:
    if g.console.admin_key is None or not DecideForm().validate_on_submit():
        abort(400)
    found = [e for e in _pending() if e.key == key]
    if not found:
        abort(404)
    return found[0]


@bp.route("/<key>/approve", methods=["POST"])
@admin_only
def approve(key: str):
    e = _entry(key)
    res = g.console.residents
    if e.kind == DOOR_TEMPLATE:
        try:
            with res.lock:
                verdict = review.admit(res.gallery, _policy(), g.console.store, e)
        except review.AlreadyDecided:
            return _decided_meanwhile()
        audit("proposal.door_template", e.resident_id or "?", f"visit {e.key}: " + (verdict or "approved"))
        if verdict is None:
            _published("Door template approved")
        else:
            flash(f"Door template rejected by the policy: {verdict}", "error")
        return redirect(url_for(".index"))
    if e.problem is not None:
        if e.reject and review.reject(g.console.store, e, note=e.reason):
            audit(f"proposal.{e.kind}", e.resident_id or "?", f"{e.key}: rejected: {e.problem}")
        flash(f"This proposal cannot be approved: {e.problem}" + ("; it was rejected" if e.reject else ""), "error")
        return redirect(url_for(".index"))
    try:
        with res.lock:
            problem = review.enroll(res.gallery, g.console.store, e)
    except review.AlreadyDecided:
        return _decided_meanwhile()
    if problem:
        flash(f"{problem}: enroll them on the Residents page first, or reject it.", "error")
        return redirect(url_for(".index"))
    audit("proposal.enrollment", e.resident_id, f"invitation {e.key}, {len(e.proposal.templates)} template(s)")
    _published(f"Enrollment approved with {len(e.proposal.templates)} template(s)")
    return redirect(url_for(".index"))


def _decided_meanwhile():
    flash("Someone else decided this proposal meanwhile: nothing was changed.", "warning")
    return redirect(url_for(".index"))


@bp.route("/<key>/reject", methods=["POST"])
@admin_only
def reject(key: str):
    e = _entry(key)
    if not review.reject(g.console.store, e, note="rejected by " + g.user.username):
        return _decided_meanwhile()
    audit(f"proposal.{e.kind}", e.resident_id or "?", f"{e.key}: rejected")
    flash("Proposal rejected: its descriptors are deleted.", "ok")
    return redirect(url_for(".index"))


@bp.route("/auto", methods=["POST"])
@admin_only
def auto():
    if g.console.admin_key is None or not DecideForm().validate_on_submit():
        abort(400)
    entries = _pending()
    res = g.console.residents
    with res.lock:
        decided = review.auto(res.gallery, _policy(), g.console.store, entries)
    approved = sum(v is None for _, v in decided)
    for e, verdict in decided:
        audit("proposal.door_template", e.resident_id or "?", f"visit {e.key}: " + (verdict or "approved"))
    if approved:
        _published(f"{approved} of {len(decided)} door template(s) approved by the policy")
    else:
        flash(f"None of {len(decided)} door template(s) approved by the policy.", "warning")
    return redirect(url_for(".index"))


@bp.route("/door-templates")
def door_templates():
    res = g.console.residents
    with res.lock:
        rows = res.gallery.door_templates()
    return render_template("door_templates.html", rows=rows, names=res.names({r for r, _, _ in rows}),
                           form=DecideForm())


@bp.route("/door-templates/<visit>/revoke", methods=["POST"])
@admin_only
def revoke(visit: str):
    if not DecideForm().validate_on_submit():
        abort(400)
    res = g.console.residents
    with res.lock:
        rid = res.gallery.revoke_door_template(visit)
    if rid is None:
        abort(404)
    audit("door_template.revoke", rid, f"visit {visit}")
    _published("Door template revoked")
    return redirect(url_for(".door_templates"))
