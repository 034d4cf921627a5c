"""Property-based requests against the served OpenAPI document: no input may cause a 5xx.

Schemathesis generates requests for every operation of `/api-doc` and checks that the response
is not a server error, that its status is one the operation declares, and that its body
matches the declared schema. User endpoints get a real user token, node endpoints a real node
credential.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

MAX_EXAMPLES = 15
NODE_PATHS = {"/api/agent/config", "/api/agent/status"}


@pytest.fixture(scope="module")
def served(controller_server, dev_idp, agent_tools):
    from netsody_controller.devidp.provider import AGENT_CLIENT_ID, CONTROLLER_CLIENT_ID

    server = controller_server()
    email = "fuzzer@example.test"
    user_token = dev_idp.idp.issue_access_token(email=email, client_id=CONTROLLER_CLIENT_ID)
    agent = agent_tools.client(
        dev_idp.idp.issue_access_token(email=email, client_id=AGENT_CLIENT_ID)
    )
    body = agent_tools.signed_proof(agent, agent_tools.new_identity(), "netsody-pair:")
    credential = agent.post("/api/agent/pair", body).body["node_credential"]
    owner = agent_tools.client(user_token)
    network = owner.post("/api/networks", {"name": "fuzz", "subnet": "10.60.0.0/24"}).body
    return {
        "url": server.url,
        "user_token": user_token,
        "node_credential": credential,
        "network_id": network["id"],
    }


def _operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(f"{url}/api-doc")
    return [result.ok() for result in schema.get_all_operations()]


def _check_operation(operation, served, statuses: Counter) -> None:
    token = served["node_credential"] if operation.path in NODE_PATHS else served["user_token"]

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case) -> None:
        params = case.path_parameters or {}
        if "network_id" in params and case.method.upper() == "GET" and hash(str(params)) % 2:
            # Some reads target the network the token owns, so deeper code runs too.
            params["network_id"] = served["network_id"]
        if operation.path == "/api/agent/config" and case.query is not None:
            # A long poll at the current revision would wait; the fuzzer only needs the answer.
            case.query["wait"] = 0
        response = case.call_and_validate(
            base_url=served["url"],
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
        )
        statuses[response.status_code] += 1

    run()


def test_api_never_fails_with_server_error(served):
    operations = _operations(served["url"])
    assert len(operations) > 30
    failures = {}
    statuses: Counter = Counter()
    for operation in operations:
        try:
            _check_operation(operation, served, statuses)
        # Collected so that one run reports every failing operation; schemathesis raises an
        # exception group.
        except (Exception, BaseExceptionGroup) as error:
            failures[f"{operation.method.upper()} {operation.path}"] = str(error)[:2000]
    assert failures == {}
    # Requests really ran, and both accepted and rejected inputs were among them.
    assert sum(statuses.values()) >= len(operations) * 2
    assert any(200 <= status < 300 for status in statuses)
    assert any(400 <= status < 500 for status in statuses)
