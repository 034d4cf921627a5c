"""The exception tree of `netsody_superpeer`."""


class SuperPeerError(Exception):
    """Base class of every error raised by the super peer on purpose."""


class ConfigError(SuperPeerError):
    """A flag or environment variable has an invalid value."""


class CertificateError(SuperPeerError):
    """The certificate or key file cannot be loaded."""
