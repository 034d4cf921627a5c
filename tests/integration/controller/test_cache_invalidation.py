"""Dropping cached sign-ins through the Zitadel invalidation endpoint, with a real provider,
PostgreSQL and Redis (the shared record of invalidations)."""

from __future__ import annotations

import pytest

SECRET = "zitadel-shared-secret-for-tests"
PATH = "/api/hooks/zitadel/invalidate-cache"


@pytest.fixture
def enabled(django_setup):
    from django.test import override_settings

    with override_settings(ZITADEL_CACHE_INVALIDATE_SECRET=SECRET):
        yield


def _post(body, secret: str | None = SECRET):
    from django.test import Client

    headers = {} if secret is None else {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    response = Client().post(PATH, data=body, content_type="application/json", **headers)
    return response.status_code, response.json()


def _subject(user_id: str) -> str:
    from netsody_controller.accounts.models import User

    return User.objects.get(id=user_id).subject


def _cached_entries(subject: str) -> list[tuple[object, float]]:
    from netsody_controller.auth import user_cache

    entries: list[tuple[object, float]] = []
    user_cache().discard_where(
        lambda _, entry: entry[0].subject == subject and entries.append(entry) and False
    )
    return entries


def _cached_subjects() -> set[str]:
    from netsody_controller.auth import user_cache

    subjects: set[str] = set()
    user_cache().discard_where(lambda _, entry: subjects.add(entry[0].subject) and False)
    return subjects


def test_disabled_endpoint_is_404(django_setup):
    from django.test import override_settings

    with override_settings(ZITADEL_CACHE_INVALIDATE_SECRET=""):
        status, body = _post({"all": True})
    assert status == 404
    assert "ZITADEL_CACHE_INVALIDATE_SECRET" in body["detail"]


def test_wrong_secret_is_403(enabled):
    status, body = _post({"all": True}, secret="wrong")
    assert status == 403
    assert body["code"] == "forbidden"


def test_missing_secret_is_401(enabled):
    status, _ = _post({"all": True}, secret=None)
    assert status == 401


def test_body_needs_one_target(enabled):
    status, _ = _post({"subject": "x", "all": True})
    assert status == 422


def test_subject_drops_only_that_user(client_for, enabled):
    alice, bob = client_for("alice"), client_for("bob")
    alice_subject, bob_subject = _subject(alice.user_id), _subject(bob.user_id)
    assert {alice_subject, bob_subject} <= _cached_subjects()
    status, body = _post({"subject": alice_subject})
    assert status == 200
    assert body["dropped"] == 1
    cached = _cached_subjects()
    assert alice_subject not in cached
    assert bob_subject in cached
    # The next request validates the token with the provider again and caches it anew.
    assert alice.get("/api/me").status == 200
    assert alice_subject in _cached_subjects()


def test_all_drops_every_user(client_for, enabled):
    alice = client_for("alice")
    status, body = _post({"all": True})
    assert status == 200
    assert body["dropped"] >= 1
    assert _cached_subjects() == set()
    assert alice.get("/api/me").status == 200


def test_mark_from_other_process_revalidates(client_for, enabled):
    """An invalidation that another process recorded in Redis makes this process's entry stale."""
    from django.core.cache import cache

    from netsody_controller.accounts.models import User
    from netsody_controller.auth import INVALIDATED_SUBJECT_PREFIX, authenticate_user_token

    alice = client_for("alice")
    subject = _subject(alice.user_id)
    cached_at = min(entry[1] for entry in _cached_entries(subject))
    cache.set(INVALIDATED_SUBJECT_PREFIX + subject, cached_at, timeout=60)
    User.objects.filter(id=alice.user_id).update(name="stale")
    authenticate_user_token(alice.token)
    # Only a revalidation with the provider writes the profile back over the changed row.
    assert User.objects.get(id=alice.user_id).name != "stale"


def test_mark_before_caching_keeps_entry(client_for, enabled):
    from django.core.cache import cache

    from netsody_controller.accounts.models import User
    from netsody_controller.auth import INVALIDATED_SUBJECT_PREFIX, authenticate_user_token

    alice = client_for("alice")
    subject = _subject(alice.user_id)
    cached_at = min(entry[1] for entry in _cached_entries(subject))
    cache.set(INVALIDATED_SUBJECT_PREFIX + subject, cached_at - 10, timeout=60)
    User.objects.filter(id=alice.user_id).update(name="stale")
    authenticate_user_token(alice.token)
    assert User.objects.get(id=alice.user_id).name == "stale"
