"""Codec names as users write them, and the SIP status -> hangup_cause table."""

from __future__ import annotations

import pytest

from callstream.sip.offer_answer import G722, L16_16K, PCMA, PCMU
from callstream.telephony.causes import failure_cause, rejection_cause
from callstream.telephony.codecs import UnknownCodec, parse_codec_names


def test_names_in_order_once_any_case() -> None:
    assert parse_codec_names(["G722,pcmu", " PCMA ", "pcmu"]) == (G722, PCMU, PCMA)
    assert parse_codec_names(["l16"]) == (L16_16K,)


@pytest.mark.parametrize(("texts", "message"), [
    (["PCMU,OPUS"], "unknown codec 'OPUS': choose from PCMU, PCMA, G722, L16"),
    ([" , "], "no codec named"),
    ([], "no codec named"),
])
def test_bad_names(texts: list[str], message: str) -> None:
    with pytest.raises(UnknownCodec, match=message):
        parse_codec_names(texts)


def test_causes() -> None:
    assert [failure_cause(s) for s in (486, 600, 404, 408, 480, 603, 487, 500)] == [
        "user_busy", "user_busy", "not_found", "timeout", "no_answer", "call_rejected",
        "originator_cancel", "unspecified"]
    assert (rejection_cause(486), rejection_cause(603)) == ("user_busy", "call_rejected")
