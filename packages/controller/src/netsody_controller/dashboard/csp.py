"""The Content-Security-Policy of the dashboard pages.

SECURITY: scripts and styles load only from the controller's own origin and no inline script
runs, so text from the API cannot execute even if it reached the page as markup. The browser
talks only to the API and to the OIDC provider (discovery and token endpoint).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from netsody_controller.dashboard.config import DashboardConfig


def origin(url: str) -> str | None:
    """Return the `scheme://host[:port]` origin of an absolute http(s) URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(config: DashboardConfig) -> str:
    """Return the policy for the dashboard's HTML pages.

    NOTE: the provider's token endpoint must be on the origin of the OIDC authority, because only
    that origin is allowed for `connect-src`.
    """
    connect = ["'self'"]
    for url in (config.api_base_url, config.oidc_authority):
        allowed = origin(url)
        if allowed and allowed not in connect:
            connect.append(allowed)
    directives = [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        f"connect-src {' '.join(connect)}",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)
