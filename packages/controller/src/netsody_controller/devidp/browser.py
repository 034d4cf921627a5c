"""Complete a device authorization as a person in a browser would, over plain HTTP forms.

The end-to-end tests use this instead of a browser: it loads the verification page, reads the
form (including its hidden fields), fills in the user code and email address, and submits it.
It works against any provider whose verification page has the same form as the development
provider's.
"""

from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx


class DeviceApprovalError(Exception):
    """The verification page did not accept the submitted form."""


class _FormParser(HTMLParser):
    """Collect the action and the hidden inputs of the first form on a page, and alert texts."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self.alerts: list[str] = []
        self._in_form = False
        self._in_alert = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action = attributes.get("action", "")
            self._in_form = True
        elif tag == "input" and self._in_form and attributes.get("type") == "hidden":
            self.hidden[attributes.get("name", "")] = attributes.get("value", "")
        elif attributes.get("role") == "alert" and "error" in attributes.get("class", ""):
            self._in_alert = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        if tag == "p":
            self._in_alert = False

    def handle_data(self, data: str) -> None:
        if self._in_alert:
            self.alerts.append(data.strip())


def read_form(html: str) -> tuple[str | None, dict[str, str]]:
    """Return the action and the hidden fields of the first form in `html`."""
    parser = _FormParser()
    parser.feed(html)
    return parser.action, parser.hidden


def approve_device_code(
    verification_uri: str,
    user_code: str,
    email: str,
    *,
    approve: bool = True,
    name: str = "",
    email_verified: bool = True,
    timeout: float = 10.0,
) -> str:
    """Enter `user_code` on the verification page and approve (or deny) as `email`.

    Returns the text of the result page. Raises `DeviceApprovalError` when the page shows an
    error (unknown or expired code), and `httpx.HTTPError` when the page cannot be loaded.
    """
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        page = client.get(verification_uri)
        page.raise_for_status()
        form = _FormParser()
        form.feed(page.text)
        if form.action is None:
            raise DeviceApprovalError(f"The page at {verification_uri} has no form")
        fields = {
            **form.hidden,
            "user_code": user_code,
            "email": email,
            "name": name,
            "action": "approve" if approve else "deny",
        }
        if not email_verified:
            fields["email_unverified"] = "1"
        result = client.post(urljoin(str(page.url), form.action), data=fields)
    if result.status_code != 200:
        parsed = _FormParser()
        parsed.feed(result.text)
        message = " ".join(parsed.alerts) or f"HTTP {result.status_code}"
        raise DeviceApprovalError(f"The verification page rejected code {user_code}: {message}")
    return result.text
