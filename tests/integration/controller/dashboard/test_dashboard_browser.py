"""The dashboard in headless Chromium against a development controller and its OpenID provider.

One test walks the owner's and a member's path, because every sign-in goes through the
provider's page and the browser is the slow part.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.timeout(240)

WAIT_SECONDS = 20
# Markup as a network name: the dashboard must show it as text and never run it.
MARKUP_NAME = '<img src=x onerror="document.title=1">'


def _wait(driver: Any) -> Any:
    """Return a wait that retries while the app replaces the elements it looks at."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_SECONDS, ignored_exceptions=(StaleElementReferenceException,))


def _find(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    return _wait(driver).until(ec.visibility_of_element_located((By.CSS_SELECTOR, selector)))


def _all(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _fill(form: Any, values: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    for name, value in values.items():
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def _sign_in(driver: Any, url: str, email: str) -> None:
    """Sign in through the development provider's sign-in page."""
    driver.get(f"{url}/")
    _find(driver, "#sign-in").click()
    _fill(_find(driver, "form[action=authorize]"), {"email": email})
    _wait(driver).until(lambda d: _all(d, "#me") and _all(d, "#me")[0].text == email)


def _sign_out(driver: Any) -> None:
    _find(driver, "#sign-out").click()
    _find(driver, "#sign-in")


def _open_tab(driver: Any, name: str) -> Any:
    _find(driver, f"#tab-link-{name}").click()
    return _find(driver, f"#tab-{name}")


def _csp_violations(driver: Any) -> list[str]:
    entries = driver.get_log("browser")
    return [entry["message"] for entry in entries if "Content Security Policy" in entry["message"]]


def test_owner_and_member_paths(browser: Any, dev_controller: Any) -> None:
    driver = browser
    url = dev_controller.url

    # The member signs in once, so the owner can add them by email.
    _sign_in(driver, url, "mia@example.com")
    assert "code=" not in driver.current_url
    assert "You are in no network yet." in _find(driver, "main").text
    _sign_out(driver)

    _sign_in(driver, url, "olivia@example.com")
    _fill(_find(driver, "#create-network"), {"name": MARKUP_NAME, "subnet": "10.77.0.0/24"})
    link = _find(driver, "a.network-link")
    assert link.text == MARKUP_NAME
    assert _all(driver, "main img") == []
    assert driver.title == "Netsody dashboard"
    assert _all(driver, ".rename-network") != []
    assert _all(driver, ".delete-network") != []

    link.click()
    assert _find(driver, "#network-name").text == MARKUP_NAME
    assert _find(driver, "#role").text == "owner"

    panel = _open_tab(driver, "join-keys")
    _fill(_find(driver, "#create-join-key"), {"name": "build servers"})
    secret = _find(driver, "#join-key-secret").text
    assert secret
    assert f"--join-key {secret}" in _find(driver, "#join-command").text
    assert "build servers" in panel.text

    _open_tab(driver, "connect")
    assert _find(driver, "#login-command").text == dev_controller.login_command
    _open_tab(driver, "join-keys")
    _find(driver, "#create-join-key")
    assert secret not in driver.page_source

    _open_tab(driver, "members")
    _fill(_find(driver, "#add-member"), {"email": "mia@example.com"})
    _wait(driver).until(lambda d: "mia@example.com" in _find(d, "#tab-members").text)
    assert "mia@example.com mia member" in _find(driver, "#tab-members").text
    _sign_out(driver)

    _sign_in(driver, url, "mia@example.com")
    assert _find(driver, "a.network-link").text == MARKUP_NAME
    assert _all(driver, ".rename-network") == []
    assert _all(driver, ".delete-network") == []
    _find(driver, "a.network-link").click()
    assert _find(driver, "#role").text == "member"
    _open_tab(driver, "join-keys")
    notice = _find(driver, "#notice")
    assert notice.text == (
        "Your role 'member' in this network does not allow manage keys; "
        "ask the network's Owner or an Admin"
    )
    assert _all(driver, "#create-join-key") == []
    assert _all(driver, ".revoke-key") == []
    _open_tab(driver, "members")
    assert _all(driver, "#add-member") == []
    assert _all(driver, ".remove-member") == []

    assert _csp_violations(driver) == []
