"""Residents: list and search, enroll from photos, change name and dates, QR credential, erase, history."""

from __future__ import annotations

import io
import logging
from datetime import date, datetime, time as dtime

from flask import Blueprint, abort, flash, g, redirect, render_template, request, send_file, url_for

from ..backend import report as rep
from ..errors import ConfigError
from .app import admin_only, audit
from .forms import EditForm, EnrollForm, EraseForm, PhotosForm, QrForm

log = logging.getLogger(__name__)
bp = Blueprint("residents", __name__, url_prefix="/residents")

PAGE = 50


def _ts(d: date | None) -> float | None:
    """Local midnight at the start of ``d`` in the console's time zone."""
    if d is None:
        return None
    return datetime.combine(d, dtime(0), g.console.tz).astimezone().timestamp() if g.console.tz else \
        datetime.combine(d, dtime(0)).astimezone().timestamp()


def _date(ts: float | None) -> date | None:
    return None if ts is None else datetime.fromtimestamp(ts, g.console.tz).date()


def _published(what: str) -> None:
    """Publish now and say what happened (a change is kept and published later when the broker is away)."""
    pub = g.console.publisher
    if pub is None:
        flash(f"{what}. Publishing is off on this console: the doors get it when a publisher runs.", "warning")
    elif pub.publish_now():
        flash(f"{what}, and published to the doors (version {pub.last_version}).", "ok")
    else:
        flash(f"{what}. The doors could not be reached yet ({pub.last_error or 'still trying'}); it is published "
              "as soon as they can.", "warning")


@bp.route("/")
def index():
    q = request.args.get("q", "")
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        page = 1
    rows, total = g.console.residents.search(q, offset=(page - 1) * PAGE, limit=PAGE)
    return render_template("residents.html", rows=rows, total=total, q=q, page=page,
                           pages=max(1, (total + PAGE - 1) // PAGE))


def _photos(files) -> list[tuple[str, bytes]]:
    return [(f.filename or "photo", f.read()) for f in files if f and f.filename]


def _refusals(result) -> None:
    """One line per quality gate's reason, naming the photos it refused."""
    by_reason: dict[tuple[str, str], list[str]] = {}
    for label, reason, message in result.refused:
        why = message.split(": ", 1)[-1] if message.startswith(label + ": ") else message
        by_reason.setdefault((reason, why.split(" (")[0]), []).append(label)
    for (reason, why), labels in by_reason.items():
        flash(f"Refused {len(labels)} photo(s), {why} [{reason}]: {', '.join(labels)}", "error")


@bp.route("/new", methods=["GET", "POST"])
@admin_only
def new():
    form = EnrollForm()
    if form.validate_on_submit():
        rid = form.resident_id.data
        if g.console.residents.get(rid) is not None:
            form.resident_id.errors.append("a resident with this id exists: add photos on their page")
            return render_template("enroll.html", form=form), 409
        try:
            result = g.console.residents.enroll(rid, form.name.data, _photos(form.photos.data),
                                                _ts(form.valid_from.data), _ts(form.valid_until.data))
        except ConfigError as e:
            flash(str(e), "error")
            return render_template("enroll.html", form=form), 400
        _refusals(result)
        if not result.added:
            flash("Nobody enrolled: no photo passed the quality checks.", "error")
            return render_template("enroll.html", form=form), 422
        audit("resident.enroll", rid, f"{result.added} template(s), {len(result.refused)} photo(s) refused")
        _published(f"Enrolled with {result.added} template(s)")
        return redirect(url_for(".show", rid=rid))
    return render_template("enroll.html", form=form), 400 if form.is_submitted() else 200


@bp.route("/<rid>")
def show(rid: str):
    r = g.console.residents.get(rid)
    if r is None:
        abort(404)
    edit = EditForm(name=r.name, valid_from=_date(r.valid_from), valid_until=_date(r.valid_until))
    qr = QrForm()
    qr.door.choices = g.console.devices()
    return render_template("resident.html", r=r, edit=edit, photos=PhotosForm(), qr=qr, erase=EraseForm(),
                           qr_ready=g.console.backend_key is not None)


@bp.route("/<rid>/edit", methods=["POST"])
@admin_only
def edit(rid: str):
    form = EditForm()
    if not form.validate_on_submit():
        flash("; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items()), "error")
        return redirect(url_for(".show", rid=rid))
    before = g.console.residents.get(rid)
    if before is None:
        abort(404)
    try:
        r = g.console.residents.update(rid, form.name.data, _ts(form.valid_from.data), _ts(form.valid_until.data))
    except ConfigError as e:
        flash(str(e), "error")
        return redirect(url_for(".show", rid=rid))
    changed = [k for k, a, b in (("name", before.name, r.name), ("valid_from", before.valid_from, r.valid_from),
                                 ("valid_until", before.valid_until, r.valid_until)) if a != b]
    audit("resident.update", rid, ", ".join(changed) or "nothing changed")
    _published("Saved")
    return redirect(url_for(".show", rid=rid))


@bp.route("/<rid>/photos", methods=["POST"])
@admin_only
def photos(rid: str):
    r = g.console.residents.get(rid)
    if r is None:
        abort(404)
    form = PhotosForm()
    if form.validate_on_submit():
        result = g.console.residents.enroll(rid, r.name, _photos(form.photos.data), r.valid_from, r.valid_until)
        _refusals(result)
        if result.added:
            audit("resident.photos", rid, f"{result.added} template(s) added")
            _published(f"{result.added} template(s) added")
    else:
        flash("Choose one or more photos.", "error")
    return redirect(url_for(".show", rid=rid))


@bp.route("/<rid>/erase", methods=["GET", "POST"])
@admin_only
def erase(rid: str):
    r = g.console.residents.get(rid)
    form = EraseForm()
    if request.method == "POST" and form.validate_on_submit():
        if r is None:
            abort(404)
        g.console.residents.erase(rid)
        events = g.console.store.erase_resident(rid)
        # The audit log keeps who erased someone and when, not whom: the id becomes the store's keyed hash.
        gone = f"erased:{g.console.store.resident_hash(rid)[:16]}"
        g.console.accounts.forget(rid, gone)
        audit("resident.erase", gone, f"gallery entry and {events} stored event(s) erased")
        _published(f"Erased, with {events} stored check-in record(s)")
        return redirect(url_for(".index"))
    if r is None:
        abort(404)
    return render_template("erase.html", r=r, form=form)


@bp.route("/<rid>/credential.png", methods=["POST"])
@admin_only
def credential(rid: str):
    from ..qrtoken import issue_token

    if g.console.residents.get(rid) is None:
        abort(404)
    if g.console.backend_key is None:
        abort(404)
    form = QrForm()
    form.door.choices = g.console.devices()
    if not form.validate_on_submit():
        flash("; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items()), "error")
        return redirect(url_for(".show", rid=rid))
    token = issue_token(g.console.backend_key, rid, g.console.site, form.door.data, lifetime_s=form.minutes.data * 60)
    audit("resident.credential", rid, f"door {form.door.data}, {form.minutes.data:g} min")
    return _png(token, f"credential-{rid}-{form.door.data}.png")


def _png(code: str, name: str):
    import segno

    buf = io.BytesIO()
    segno.make(code, error="m", micro=False, boost_error=False).save(buf, kind="png", scale=6, border=4)
    buf.seek(0)
    return send_file(buf, mimetype="image/png", as_attachment=True, download_name=name)


@bp.route("/<rid>/history")
def history(rid: str):
    table = rep.history(g.console.store, rid, tz=g.console.tz)
    r = g.console.residents.get(rid)
    if r is None and not table.rows:
        abort(404)
    return render_template("table.html", title=f"History of {r.name if r else rid}", table=table,
                           csv=url_for(".history_csv", rid=rid))


@bp.route("/<rid>/history.csv")
def history_csv(rid: str):
    from .pages_checkins import csv_response

    return csv_response(rep.history(g.console.store, rid, tz=g.console.tz), f"history-{rid}.csv")
