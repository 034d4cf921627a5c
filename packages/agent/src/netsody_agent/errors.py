"""Exception tree of the agent: every error the agent raises on purpose derives from AgentError."""

from netsody_common.errors import NetsodyError


class AgentError(NetsodyError):
    """Base class of the agent's errors."""


class UnsupportedPlatformError(AgentError):
    """The command needs Linux (TUN device, routes, iptables) and this is another platform."""


class SettingsError(AgentError):
    """The settings file or a settings value is invalid."""


class LocalApiError(AgentError):
    """A local API request failed; `code` is the machine-readable reason."""

    def __init__(self, detail: str, code: str = "error") -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class DeviceFlowError(AgentError):
    """The OAuth 2.0 device authorization flow failed (RFC 8628)."""


class ControllerError(AgentError):
    """The controller rejected a request or could not be reached."""

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code


class ConfigSourceError(AgentError):
    """A configuration source failed or served an invalid configuration."""


class OsLayerError(AgentError):
    """A system change (address, route, firewall rule, DNS setting) failed."""
