"""Tests for callstream.sip.digest (RFC 2617, RFC 7616 vectors, RFC 8760)."""

from __future__ import annotations

import hashlib

import pytest

from callstream.sip.digest import Challenge, Credentials, build_authorization, parse_challenge
from callstream.sip.exceptions import DigestError

from .helpers import fixture, response_of


def test_rfc2617_example() -> None:
    # RFC 2617 §3.5.
    challenge = Challenge(
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop=("auth", "auth-int"),
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
    )
    value = build_authorization(
        challenge,
        Credentials("Mufasa", "Circle Of Life"),
        method="GET",
        uri="/dir/index.html",
        cnonce="0a4f113b",
    )
    assert value == (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
        'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b", '
        'qop=auth, nc=00000001, opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, response: str) -> None:
    # RFC 7616 §3.9.1 (the algorithms RFC 8760 brings to SIP).
    challenge = Challenge(
        realm="http-auth@example.org",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        algorithm=algorithm,
        qop=("auth",),
        opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    )
    value = build_authorization(
        challenge,
        Credentials("Mufasa", "Circle of Life"),
        method="GET",
        uri="/dir/index.html",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert f'response="{response}"' in value
    assert f"algorithm={algorithm}," in value


def test_parse_asterisk_challenge() -> None:
    response = response_of(fixture("asterisk_401.sip"))
    challenge = parse_challenge(response.headers.get("WWW-Authenticate") or "")
    assert challenge == Challenge(
        realm="asterisk",
        nonce="1718000000/0123456789abcdef0123456789abcdef",
        algorithm="md5",
        qop=("auth",),
        opaque="3f2e1d0c9b8a7f6e",
    )


def test_rfc2069_without_qop_and_sess() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", algorithm=MD5-sess, stale=TRUE')
    assert challenge.stale and challenge.qop == ()
    value = build_authorization(
        challenge, Credentials("u", "p"), method="INVITE", uri="sip:b@h", cnonce="c"
    )

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{md5('u:r:p')}:n:c")
    ha2 = md5("INVITE:sip:b@h")
    expected = md5(f"{ha1}:n:{ha2}")
    assert f'response="{expected}"' in value
    assert "qop=" not in value


def test_auth_int_hashes_the_body() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-int"')
    with_body = build_authorization(
        challenge, Credentials("u", "p"), method="INVITE", uri="sip:b@h", cnonce="c", body=b"x"
    )
    without = build_authorization(
        challenge, Credentials("u", "p"), method="INVITE", uri="sip:b@h", cnonce="c"
    )
    assert "qop=auth-int" in with_body and with_body != without


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('Basic realm="r"', "unsupported authentication scheme 'Basic'"),
        ('Digest realm="r"', "challenge lacks realm or nonce"),
        ('Digest realm="r", nonce="n", algorithm=SHA-1', "unsupported digest algorithm 'SHA-1'"),
        ('Digest realm="r", nonce', "malformed challenge parameter 'nonce'"),
        ("Digest " + "x" * 5000, "challenge is too long"),
    ],
)
def test_bad_challenges(value: str, message: str) -> None:
    with pytest.raises(DigestError) as info:
        parse_challenge(value)
    assert str(info.value) == message


def test_unknown_qop_only() -> None:
    challenge = Challenge(realm="r", nonce="n", qop=("auth-conf",))
    with pytest.raises(DigestError, match="unsupported qop"):
        build_authorization(challenge, Credentials("u", "p"), method="INVITE", uri="u", cnonce="c")


def test_credentials_repr_hides_the_password() -> None:
    assert "secret" not in repr(Credentials("u", "secret"))
