"""schemathesis against the server's own ``/openapi.json``: a few generated requests per
operation on one real session (seeded, so a run is repeatable), with schemathesis' default
checks. Every answer must be documented and match its schema, no bad input may be a server
error, every request the schema calls invalid is refused, and every request it calls valid
is accepted: the document says exactly what the server enforces."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.server.harness import KEY, running_server

pytestmark = pytest.mark.integration

EXAMPLES = 4

# Operations that start or end sessions change what the others run against: the harness
# covers them; here they would only start kernels. (Generated shell commands run inside the
# session's sandbox, with the server's run timeout of 2 s.)
SKIPPED = {"/api/v1/codebox/start", "/api/v1/codebox/{session_id}/stop",
           "/api/v1/codebox/{session_id}/restart"}

# The one place a request valid by the schema may rightly fail: a well-formed package name
# may name no package, and pip's failure is a documented 400 (the world's answer, not a
# refusal of the request). The test runs offline (PIP_NO_INDEX), so every install fails.
LENIENT = {"/api/v1/codebox/{session_id}/install": [positive_data_acceptance]}


def test_generated_requests_meet_the_openapi_document(tmp_path_factory):
    env = {"CODEBOX_SERVER_API_KEYS": KEY, "CODEBOX_SERVER_RUN_TIMEOUT": "2",
           "CODEBOX_SERVER_INSTALL_TIMEOUT": "30",
           "PIP_NO_INDEX": "1"}  # installs of generated names fail at once, offline
    headers = {"Authorization": f"Bearer {KEY}"}
    with running_server(tmp_path_factory, env=env) as srv, srv.client(KEY) as api:
        schema = schemathesis.openapi.from_url(f"{srv.url}/openapi.json")
        sid = api.get("/codebox/start").json()["id"]
        failures = []
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 10
        for operation in operations:
            if operation.path in SKIPPED:
                continue
            try:
                _fuzz(operation, srv.url, headers, sid)
            except Exception as exc:  # noqa: BLE001 - collected, reported together below
                failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
        api.post(f"/codebox/{sid}/stop")
        assert not failures, "\n\n".join(failures)
        assert httpx.get(f"{srv.url}/health", trust_env=False).json()["sessions"] == 0


def _fuzz(operation, base_url: str, headers: dict[str, str], sid: int) -> None:
    """A few generated requests to ``operation``, on the session ``sid``."""
    lenient = LENIENT.get(operation.path, [])

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def check(case):
        if "session_id" in (case.path_parameters or {}):
            case.path_parameters["session_id"] = sid
        case.call_and_validate(base_url=base_url, headers=headers, excluded_checks=lenient)

    check()
