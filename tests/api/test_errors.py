"""api/errors.py: every domain refusal has its row (HTTP status, Telnyx code, title)."""

from __future__ import annotations

import inspect

import orjson
import pytest

from callstream.api.errors import COMMAND_ERRORS, command_error_status, on_command_error
from callstream.calls import exceptions


def test_every_domain_error_has_its_own_row() -> None:
    domain = {cls for _, cls in inspect.getmembers(exceptions, inspect.isclass)
              if issubclass(cls, exceptions.CommandError) and cls is not exceptions.CommandError}
    assert domain == set(COMMAND_ERRORS)


@pytest.mark.parametrize(("exc", "row"), [
    (exceptions.CallNotFound("x"), (422, "90015", "Invalid Call Control ID")),
    (exceptions.CallEnded("x"), (422, "90018", "Call has already ended")),
    (exceptions.CallNotAnswered("x"), (422, "90034", "Call not answered yet")),
    (exceptions.StreamLimit("x"), (422, "90045", "Media Streaming is used")),
    (exceptions.CommandError("x"), (422, "10015", "Bad Request")),
])
def test_rows(exc: exceptions.CommandError, row: tuple[int, str, str]) -> None:
    assert command_error_status(exc) == row


async def test_the_envelope_names_the_field() -> None:
    response = await on_command_error(
        None, exceptions.MissingParameter("The 'tx' parameter is required.",  # type: ignore[arg-type]
                                          pointer="/tx"))
    assert response.status_code == 422
    assert orjson.loads(response.body) == {"errors": [{
        "code": "10004", "title": "Missing required parameter",
        "detail": "The 'tx' parameter is required.", "source": {"pointer": "/tx"}}]}
