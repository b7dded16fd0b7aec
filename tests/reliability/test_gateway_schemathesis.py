"""Property-based fuzzing of the gateway from its own OpenAPI document (schemathesis).

Against real uvicorn gateways on loopback, bounded (``EXAMPLES_PER_OPERATION`` per operation):
one in front of the real Triton, one whose Triton cannot be reached. For every generated request:
no 5xx except the documented 503 (``triton_unavailable`` / ``server_busy``) and 504
(``triton_timeout``); the status code is one the schema declares for the operation; JSON bodies
match the declared response schema; the content type is the declared one; error bodies carry
``success: false`` + ``error`` + ``error_message``.

schemathesis' own pytest plugin (``from_fixture``) does not work with pytest 9, so each operation's
hypothesis strategy is driven directly here.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.reliability.processes import GatewayProcess, free_port

DOCUMENTED_5XX = {503: ("triton_unavailable", "model_unavailable", "server_busy"), 504: ("triton_timeout",)}
EXAMPLES_PER_OPERATION = 25
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def check_response(case, response) -> None:
    status = response.status_code
    # schemathesis keeps headers in wire form: lower-case name -> list of values
    is_json = any("json" in value for value in response.headers.get("content-type", []))
    where = f"{case.method} {case.formatted_path}"
    if case.path == "/ready" and status == 503:  # documented: ReadyResponse with the reason
        body = response.json()
        assert body["ready"] is False and body["reason"] and response.headers.get("retry-after"), body
    elif status >= 500:
        body = response.json() if is_json else {}
        assert status in DOCUMENTED_5XX and body.get("error") in DOCUMENTED_5XX[status], (
            f"{where} -> undocumented {status}: {response.text[:500]}"
        )
    if status >= 400 and is_json and case.path != "/ready":
        body = response.json()
        assert body.get("success") is False and body.get("error") and body.get("error_message"), (where, body)
    case.validate_response(response, checks=CHECKS)


def fuzz_operation(operation) -> int:
    """Run one operation's hypothesis strategy; returns how many requests were sent."""
    sent = 0

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=operation.as_strategy())
    def run(case):
        nonlocal sent
        sent += 1
        check_response(case, case.call(timeout=120))

    run()
    return sent


def fuzz(base_url: str) -> tuple[dict[str, int], list[str]]:
    """Fuzz every operation; return (requests per operation, failure descriptions)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    counts: dict[str, int] = {}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        try:
            counts[label] = fuzz_operation(operation)
        except Exception as error:  # collect every operation's failure, then fail once
            counts[label] = -1
            failures.append(f"{label}: {type(error).__name__}: {str(error)[:1500]}")
    return counts, failures


@pytest.mark.integration
def test_fuzzed_requests_stay_within_the_contract_with_triton_up(reliability_gateway):
    counts, failures = fuzz(reliability_gateway.url)
    assert len(counts) >= 10, f"the OpenAPI document lists too few operations: {sorted(counts)}"
    assert sum(counts.values()) >= 3 * len(counts), counts
    assert not failures, "\n\n".join(failures)
    assert reliability_gateway.alive()


def test_fuzzed_requests_stay_within_the_contract_with_triton_unreachable(tmp_path):
    gateway = GatewayProcess(tmp_path, f"127.0.0.1:{free_port()}", triton_timeout_s=5)
    gateway.start()
    try:
        counts, failures = fuzz(gateway.url)
        assert not failures, "\n\n".join(failures)
        assert gateway.alive()
    finally:
        gateway.stop()
