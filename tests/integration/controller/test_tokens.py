"""Rejected user tokens: each failure gets 401 or 403 with a message naming the reason."""

from __future__ import annotations

import base64
import json


def _me(agent_tools, token: str | None, **headers: str):
    return agent_tools.client(token).get("/api/me", **headers)


def test_missing_token(agent_tools):
    response = _me(agent_tools, None)
    assert response.status == 401
    assert response.body["code"] == "unauthenticated"
    assert "Authorization: Bearer" in response.body["detail"]


def test_basic_scheme_rejected(agent_tools):
    response = _me(agent_tools, None, HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")
    assert response.status == 401


def test_garbage_token(agent_tools):
    response = _me(agent_tools, "not-a-jwt")
    assert response.status == 401
    assert response.body["code"].startswith("token_")


def test_expired_token(agent_tools, token_for):
    response = _me(agent_tools, token_for("late@example.test", lifetime=-3600))
    assert response.status == 401
    assert response.body["code"] == "token_expired"


def test_agent_client_token_on_user_endpoint(agent_tools, token_for):
    response = _me(agent_tools, token_for("agent@example.test", agent=True))
    assert response.status == 401
    assert response.body["code"] == "token_wrong_audience"


def test_unverified_email_rejected(agent_tools, token_for):
    response = _me(agent_tools, token_for("unverified@example.test", email_verified=False))
    assert response.status == 403
    assert response.body["code"] == "email_not_verified"
    assert "not verified" in response.body["detail"]


def test_token_signed_by_unknown_key(agent_tools, token_for):
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    valid = token_for("forger@example.test")
    payload = valid.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})
    forged = jwt.encode({"alg": "RS256", "kid": "stranger"}, claims, stranger)
    response = _me(agent_tools, forged)
    assert response.status == 401
    assert response.body["code"] in {"token_unknown_key", "token_invalid_signature"}


def test_valid_token_cached_user(agent_tools, token_for):
    token = token_for("cached@example.test")
    first = _me(agent_tools, token)
    second = _me(agent_tools, token)
    assert first.status == second.status == 200
    assert first.body == second.body
