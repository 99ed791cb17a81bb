"""Schemathesis against a real server: every operation in /v2/openapi.json, all checks.

Bounded and derandomized, so a failure reproduces. Nothing is excluded: dial
(``POST /v2/calls``) only reaches SIP with a ``connection_id`` naming an active
application, which generated ids never do; call actions on generated ids answer 422
(90015), streams on unknown TeXML calls 404.

One check is adapted, not dropped: ``positive_data_acceptance`` expects a request that
matches the schema to succeed, but Telnyx answers 422 for rules about state that JSON
Schema cannot state (the call must exist and be up, the application must exist, one of
two fields is needed) and for destinations the outbound policy refuses (decided by DNS
and settings, "Destination not allowed"). ``state_rules_only`` accepts exactly those and
fails any other 422 for schema-valid data, so the schema must still describe every field
rule.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import CheckContext
from schemathesis.core.transport import Response
from schemathesis.generation.modes import GenerationMode
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.helpers import ServerProcess

#: Examples per operation: enough to hit nulls, huge numbers and bad types, within
#: about a minute for the whole module on a loaded 2-core machine.
MAX_EXAMPLES = 25

#: Call state (docs/api.md): unknown, ended, or not yet answered call.
STATE_CODES = {"90015", "90018", "90034"}
#: (code, pointer) of rules across fields or about stored state.
STATE_RULES = {
    ("10015", "/connection_id"),  # must name an active application
    ("10004", "/stream_url"),  # streaming_start: stream_url (or a Dialogflow config)
    ("10004", "/rx"),  # fork_start: rx and tx, or target
    ("10004", "/tx"),
    ("10015", "/rx"),  # fork addresses: port 1..65535, not an unspecified address
    ("10015", "/tx"),
    ("10015", "/target"),
    ("10015", "/stream_bidirectional_sampling_rate"),  # OPUS has no 22050 Hz
    # The configured Whisper model decides which languages exist, the models installed
    # which final_model names do.
    ("10032", "/transcription_engine_config/language"),
    ("10032", "/transcription_engine_config/final_model"),
}

#: The outbound policy's refusal (docs/security/outbound.md), whatever the field.
OUTBOUND_REFUSED = "Destination not allowed"


def state_rules_only(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """positive_data_acceptance, but a 422 naming only state rules is an answer."""
    if (
        case.meta is not None
        and case.meta.generation.mode is GenerationMode.POSITIVE
        and response.status_code == 422
    ):
        errors = response.json()["errors"]
        if all(
            e["code"] in STATE_CODES
            or e.get("title") == OUTBOUND_REFUSED
            or (e["code"], e.get("source", {}).get("pointer"))
            in STATE_RULES
            for e in errors
        ):
            return None
    return positive_data_acceptance(ctx, response, case)


@pytest.fixture(scope="module")
def api_schema(server: ServerProcess) -> Iterator[BaseSchema]:
    yield schemathesis.openapi.from_url(
        server.api_url + "/openapi.json",
        headers={"Authorization": f"Bearer {server.api_key}"},
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi(case: Case, server: ServerProcess) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=30,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[state_rules_only],
    )
