"""The console's forms (Flask-WTF: each POST form carries its CSRF token; validation is WTForms')."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileRequired, MultipleFileField
from wtforms import BooleanField, DateField, FloatField, IntegerField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, Regexp

from ..capture.formats import IMAGE_SUFFIXES
from .accounts import MIN_PASSWORD, ROLES

_ID = Regexp(r"^[A-Za-z0-9_.-]{1,64}$", message="1-64 letters, digits, '.', '_' or '-'")
_PHOTOS = sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class ValidityMixin:
    valid_from = DateField("Valid from", validators=[Optional()])
    valid_until = DateField("Valid until (excluded)", validators=[Optional()])


class EnrollForm(ValidityMixin, FlaskForm):
    resident_id = StringField("Resident id", validators=[DataRequired(), _ID])
    name = StringField("Display name", validators=[DataRequired(), Length(max=100)])
    photos = MultipleFileField("Photos of the resident alone (a few different ones)",
                               validators=[FileRequired(), FileAllowed(_PHOTOS, "photos only")])


class PhotosForm(FlaskForm):
    photos = MultipleFileField("More photos", validators=[FileRequired(), FileAllowed(_PHOTOS, "photos only")])


class EditForm(ValidityMixin, FlaskForm):
    name = StringField("Display name", validators=[DataRequired(), Length(max=100)])


class EraseForm(FlaskForm):
    confirm = BooleanField("Yes, erase this resident everywhere", validators=[DataRequired()])


class QrForm(FlaskForm):
    door = SelectField("Door", validators=[DataRequired()])
    # Doors refuse a credential valid longer than their qr_credential.max_lifetime_s (5 minutes by default).
    minutes = FloatField("Good for (minutes)", default=5.0, validators=[InputRequired(), NumberRange(0.5, 60)])


class ProvisionForm(FlaskForm):
    device = StringField("Device id of the new door", validators=[DataRequired(), _ID])
    hardware = StringField("Hardware id (from the waiting kiosk's screen)", validators=[Optional(), Length(max=64)])
    name = StringField("Site name", validators=[DataRequired(), Length(max=100)])
    address = StringField("Service address", validators=[DataRequired(), Length(max=200)])
    lat = FloatField("Latitude", validators=[InputRequired(), NumberRange(-90, 90)])
    lon = FloatField("Longitude", validators=[InputRequired(), NumberRange(-180, 180)])
    radius = FloatField("Clock-in radius (m)", default=150.0, validators=[InputRequired(), NumberRange(10, 100000)])
    hours = FloatField("Code good for (hours)", default=24.0, validators=[InputRequired(), NumberRange(0.1, 24 * 30)])


class ResetForm(FlaskForm):
    minutes = IntegerField("Code good for (minutes)", default=60, validators=[InputRequired(), NumberRange(1, 24 * 60)])


class AccountForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Regexp(r"^[A-Za-z0-9_.@-]{1,64}$")])
    role = SelectField("Role", choices=list(ROLES), default="viewer")
    password = PasswordField(f"Password (at least {MIN_PASSWORD} characters)",
                             validators=[DataRequired(), Length(min=MIN_PASSWORD, max=1024)])


class AccountUpdateForm(FlaskForm):
    role = SelectField("Role", choices=list(ROLES))
    disabled = BooleanField("Disabled")
    password = PasswordField("New password (empty: unchanged)", validators=[Optional(), Length(min=MIN_PASSWORD,
                                                                                             max=1024)])


class UnlockForm(FlaskForm):
    pass


class LogoutForm(FlaskForm):
    pass


class DecideForm(FlaskForm):
    """A button that changes something (approve, reject, revoke): its CSRF token and nothing else."""
