"""Doors: each one's last status, the ones behind the latest gallery, provisioning and reset codes."""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, url_for

from ..sync.updates.admin import Ledger
from .app import admin_only, audit
from .doors import doors as door_rows
from .forms import ProvisionForm, ResetForm
from .pages_residents import _png

bp = Blueprint("doors", __name__, url_prefix="/doors")


def _latest() -> int | None:
    with g.console.residents.lock:
        last = Ledger(g.console.residents.gallery, g.console.site).last()
    return last.version if last else None


def _rows():
    rows = {d.device: d for d in door_rows(g.console.store, g.console.site,
                                           offline_after_s=g.console.config.console.offline_after_s)}
    known = g.console.devices()
    return [rows.get(d) for d in sorted(set(rows) | set(known))], sorted(set(known) - set(rows))


@bp.route("/")
def index():
    rows, silent = _rows()
    pub = g.console.publisher
    return render_template("doors.html", rows=[r for r in rows if r], silent=silent, latest=_latest(),
                           publisher=pub, reset=ResetForm(), can_reset=g.console.fleet_key_path is not None)


@bp.route("/behind")
def behind():
    latest = _latest()
    rows, silent = _rows()
    late = [r for r in rows if r and r.behind(latest)]
    return render_template("behind.html", rows=late, silent=silent, latest=latest)


def _fleet_key():
    from ..provisioning.trust import load_root_private

    if g.console.fleet_key_path is None:
        abort(404)
    return load_root_private(g.console.fleet_key_path)


@bp.route("/provision", methods=["GET", "POST"])
@admin_only
def provision():
    from ..provisioning import bundle as bmod
    from ..provisioning.store import certificates_in

    cfg = g.console.config
    ready = g.console.fleet_key_path is not None and g.console.backend_public is not None \
        and g.console.admin_key is not None
    form = ProvisionForm()
    if ready and form.validate_on_submit():
        certs = certificates_in(cfg.path(cfg.broker.ca_file).read_bytes())
        if len(certs) != 1:
            flash("The broker's CA file does not hold exactly one certificate.", "error")
            return render_template("provision.html", form=form, ready=ready), 500
        try:
            bundle = bmod.make_bundle(
                site=g.console.site, device_id=form.device.data,
                hardware_id=form.hardware.data.lower() if form.hardware.data else None, name=form.name.data,
                address=form.address.data, latitude=form.lat.data, longitude=form.lon.data,
                radius_m=form.radius.data, broker_url=cfg.keys.door_broker_url or cfg.broker.url,
                ca_sha256=bmod.ca_fingerprint(certs[0]), backend=g.console.backend_public,
                admin=g.console.admin_key.public(), valid_s=form.hours.data * 3600)
        except ValueError as e:
            flash(str(e), "error")
            return render_template("provision.html", form=form, ready=ready), 400
        code = bmod.sign_bundle(bundle, _fleet_key())
        audit("door.provision", f"{g.console.site}/{form.device.data}", f"code good for {form.hours.data:g} h")
        return _png(code, f"provision-{form.device.data}.png")
    return render_template("provision.html", form=form, ready=ready), 400 if form.is_submitted() else 200


@bp.route("/<device>/reset.png", methods=["POST"])
@admin_only
def reset(device: str):
    from ..provisioning import bundle as bmod

    form = ResetForm()
    if not form.validate_on_submit():
        flash("; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items()), "error")
        return redirect(url_for(".index"))
    if device not in g.console.devices():
        abort(404)
    code = bmod.sign_reset(g.console.site, device, _fleet_key(), valid_s=form.minutes.data * 60)
    audit("door.reset", f"{g.console.site}/{device}", f"code good for {form.minutes.data} min")
    return _png(code, f"reset-{device}.png")
