"""The kiosk's exception hierarchy.

Every error the kiosk raises on purpose is a :class:`KioskError`. Where a
second, built-in base says what kind of mistake it is, it has one too (as
gpiozero does), so callers may catch either.
"""


class KioskError(Exception):
    """Base of every error the kiosk raises on purpose."""


class ConfigError(KioskError, ValueError):
    """The configuration is malformed: names the file, line and key."""

    #: sysexits.h EX_CONFIG: systemd is told not to restart on it.
    exit_status = 78


class CameraUnavailable(KioskError, RuntimeError):
    """A frame source could not be opened or stopped delivering frames."""


class SourceExhausted(KioskError, EOFError):
    """A finite frame source (a file or a folder) has no more frames."""


class ModelUnavailable(KioskError, RuntimeError):
    """The face models could not be found or loaded."""


class EnrollmentRefused(KioskError, ValueError):
    """A photo cannot be used as a template; ``reason`` says why."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class StorageError(KioskError, RuntimeError):
    """The database could not be opened, migrated or written."""


class KeyFileError(KioskError, PermissionError):
    """A key file is missing, malformed or readable by others."""


class UpdateRejected(KioskError, ValueError):
    """A gallery update or other signed message was refused; ``reason`` says why."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


class EnvelopeError(KioskError, ValueError):
    """A JOSE envelope failed to verify or decrypt."""


class GpioUnavailable(KioskError, RuntimeError):
    """The GPIO pins (door relay, LEDs, buzzer, sensors) could not be claimed."""


class ScreenUnavailable(KioskError, RuntimeError):
    """The door screen cannot listen where ``[screen]`` says (the port is taken, the address is not here)."""


class OutboxFull(KioskError, RuntimeError):
    """The outbox reached its disk budget and the policy is to refuse new events."""


class BrokerUnavailable(KioskError, ConnectionError):
    """The MQTT broker could not be reached, or did not accept this client."""


class ProvisioningRefused(KioskError, ValueError):
    """A provisioning code or reset was refused; ``reason`` says why, the message says it for an installer."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


class NotProvisioned(KioskError, RuntimeError):
    """The device has not been provisioned (or its provisioning state is unusable)."""


class PinnedKeyMismatch(ConfigError):
    """A stored key or identity is not what the signed provisioning code says: the kiosk must not run (exit 78)."""


class TokenRefused(KioskError, ValueError):
    """A resident's QR credential was refused; ``reason`` says why."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


class MissingExtra(KioskError, ImportError):
    """An admin command needs a package of an extra that is not installed (e.g. ``kiosk[admin]``)."""


class StoreUnavailable(KioskError, ConnectionError):
    """The back end's event store cannot be reached (PostgreSQL down): retried, nothing acknowledged meanwhile."""


class LoginRefused(KioskError, PermissionError):
    """A console login refused: a wrong name or password, or a login locked out after too many failures."""

    def __init__(self, message: str, *, locked_until: float | None = None):
        super().__init__(message)
        self.locked_until = locked_until
