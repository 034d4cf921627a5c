"""URL helpers: redaction of credentials and the controller's API base."""

from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """Return `url` with the password of its user info replaced by `***`.

    SECURITY: basic-auth credentials of network URLs must never reach a log or a status line.
    """
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    netloc = f"{user}:***@{host}" if parts.password is not None else f"{user}@{host}"
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def split_basic_auth(url: str) -> tuple[str, tuple[str, str] | None]:
    """Split `https://user:pass@host/path` into the URL without user info and (user, pass).

    User and password are percent-decoded, so `%3A` in a password stands for `:`.
    """
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    bare = urlunsplit(SplitResult(parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username), unquote(parts.password or ""))


def controller_api_base(controller_url: str) -> str:
    """Return the base URL of the controller API, ending in `/api`.

    Operators pass `https://controller.example.com/api` (the form the dashboard prints); a URL
    without the `/api` suffix gets it appended, so both forms work.
    """
    base = controller_url.rstrip("/")
    if not base.endswith("/api"):
        base += "/api"
    return base
