"""HTML pages of the development OpenID provider: sign-in forms with a development-only banner."""

from collections.abc import Mapping
from html import escape

_STYLE = """
body { font-family: sans-serif; max-width: 34rem; margin: 2rem auto; padding: 0 1rem; }
.dev-only { background: #b00020; color: #fff; padding: .75rem 1rem; font-weight: bold; }
.error { color: #b00020; }
label { display: block; margin: .75rem 0 .25rem; }
input[type=text], input[type=email] { width: 100%; padding: .4rem; }
button { margin: 1rem .5rem 0 0; padding: .5rem 1.25rem; }
"""

DEV_ONLY_BANNER = (
    "DEVELOPMENT ONLY: this OpenID provider signs in anyone as any email address "
    "without a password. Never expose it to other machines or use it for real users."
)


def page(title: str, body: str, *, status_note: str = "") -> str:
    """Wrap `body` (already escaped HTML) in a page with the development-only banner."""
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>"
        f'<div class="dev-only" role="alert">{escape(DEV_ONLY_BANNER)}</div>'
        f"<h1>{escape(title)}</h1>{status_note}{body}</body></html>\n"
    )


def _error_note(error: str | None) -> str:
    return f'<p class="error" role="alert">{escape(error)}</p>' if error else ""


def _identity_fields(email: str = "") -> str:
    return (
        '<label for="email">Email address to sign in as</label>'
        f'<input type="email" id="email" name="email" value="{escape(email)}" required '
        'autocomplete="email">'
        '<label for="name">Display name (optional)</label>'
        '<input type="text" id="name" name="name" autocomplete="name">'
        '<label><input type="checkbox" name="email_unverified" value="1"> '
        "Mark this email address as not verified (to test how clients reject such users)"
        "</label>"
        '<button type="submit" name="action" value="approve">Approve</button>'
        '<button type="submit" name="action" value="deny" formnovalidate>Deny</button>'
    )


def device_form(*, user_code: str, form_token: str, error: str | None = None) -> str:
    """Return the verification page where a user enters the code shown by a device."""
    body = (
        "<p>Enter the code shown on your device, then choose whom to sign in as.</p>"
        '<form method="post" action="device">'
        f'<input type="hidden" name="form_token" value="{escape(form_token)}">'
        '<label for="user_code">Code</label>'
        f'<input type="text" id="user_code" name="user_code" value="{escape(user_code)}" '
        'required autocomplete="off">'
        f"{_identity_fields()}</form>"
    )
    return page("Sign in a device", body, status_note=_error_note(error))


def device_result(*, approved: bool, email: str | None) -> str:
    """Return the page shown after a device authorization was approved or denied."""
    if approved:
        message = f"Device approved: it is now signed in as {email}. You can close this page."
        return page("Device approved", f'<p id="result">{escape(message)}</p>')
    return page("Device denied", '<p id="result">Device denied: it will not be signed in.</p>')


def authorize_form(
    *, client_id: str, params: Mapping[str, str], form_token: str, error: str | None = None
) -> str:
    """Return the sign-in page of the authorization code flow."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in params.items()
        if name not in ("email", "name", "email_unverified", "action", "form_token")
    )
    body = (
        f"<p>Client <code>{escape(client_id)}</code> requests sign-in.</p>"
        '<form method="post" action="authorize">'
        f'<input type="hidden" name="form_token" value="{escape(form_token)}">'
        f"{hidden}{_identity_fields(params.get('login_hint', ''))}</form>"
    )
    return page("Sign in", body, status_note=_error_note(error))


def error_page(title: str, message: str) -> str:
    """Return a page that shows an error to the user."""
    return page(title, f'<p class="error" role="alert">{escape(message)}</p>')


def index_page(issuer: str) -> str:
    """Return the start page with links to the discovery document and the device page."""
    body = (
        f"<p>Issuer: <code>{escape(issuer)}</code></p><ul>"
        '<li><a href=".well-known/openid-configuration">Discovery document</a></li>'
        '<li><a href="device">Sign in a device</a></li></ul>'
    )
    return page("Netsody development OpenID provider", body)
