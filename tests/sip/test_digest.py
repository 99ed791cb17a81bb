"""Tests for callstream.sip.digest (RFC 2617, RFC 7616 vectors, RFC 8760)."""

from __future__ import annotations

import hashlib

import pytest

from callstream.sip.digest import (
    Authorization,
    AuthOutcome,
    Challenge,
    Credentials,
    DigestServer,
    NonceCheck,
    build_authorization,
    check_nonce,
    make_nonce,
    parse_authorization,
    parse_challenge,
)
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


# ---------------------------------------------------------------- server side

SECRET = b"k" * 32


def _answer(server: DigestServer, source: str, now: float, *, password: str = "pw",
            uri: str = "sip:bot@127.0.0.1") -> str:
    challenge = parse_challenge(server.challenge(source, now))
    return build_authorization(
        challenge, Credentials("alice", password), method="INVITE", uri=uri, cnonce="c0ffee"
    )


def test_nonce_is_valid_for_its_source_and_lifetime() -> None:
    nonce = make_nonce(SECRET, 100.0, "192.0.2.1")
    assert check_nonce(nonce, SECRET, 100.0, "192.0.2.1") is NonceCheck.VALID
    assert check_nonce(nonce, SECRET, 130.0, "192.0.2.1") is NonceCheck.VALID
    assert check_nonce(nonce, SECRET, 130.5, "192.0.2.1") is NonceCheck.STALE
    assert check_nonce(nonce, SECRET, 100.0, "192.0.2.2") is NonceCheck.INVALID
    assert check_nonce(nonce, b"other" * 8, 100.0, "192.0.2.1") is NonceCheck.INVALID


@pytest.mark.parametrize(
    "nonce", ["", "abc", "zz.0123", "186a0.00000000000000000000000000000000", "x" * 100]
)
def test_forged_nonces_are_invalid(nonce: str) -> None:
    assert check_nonce(nonce, SECRET, 100.0, "192.0.2.1") is NonceCheck.INVALID


def test_nonce_from_the_future_is_invalid() -> None:
    nonce = make_nonce(SECRET, 500.0, "192.0.2.1")
    assert check_nonce(nonce, SECRET, 100.0, "192.0.2.1") is NonceCheck.INVALID


def test_challenge_is_md5_with_qop_auth() -> None:
    server = DigestServer(Credentials("alice", "pw"), realm="callstream", secret=SECRET)
    challenge = parse_challenge(server.challenge("192.0.2.1", 1.0, stale=True))
    assert (challenge.realm, challenge.algorithm, challenge.qop, challenge.stale) == (
        "callstream", "MD5", ("auth",), True)


def test_server_accepts_the_right_answer_only() -> None:
    server = DigestServer(Credentials("alice", "pw"), realm="callstream", secret=SECRET)
    source, uri = "192.0.2.1", "sip:bot@127.0.0.1"

    def check(values: list[str], *, now: float = 10.0, at: str = source,
              request_uri: str = uri) -> AuthOutcome:
        return server.check(values, method="INVITE", uri=request_uri, source=at, now=now)

    good = _answer(server, source, 5.0)
    assert check([good]) is AuthOutcome.OK
    assert check([]) is AuthOutcome.MISSING
    assert check(["Basic YWxpY2U6cHc="]) is AuthOutcome.MISSING
    other_realm = good.replace('realm="callstream"', 'realm="elsewhere"')
    assert check([other_realm]) is AuthOutcome.MISSING
    assert check([other_realm, good]) is AuthOutcome.OK
    assert check([_answer(server, source, 5.0, password="guess")]) is AuthOutcome.FAILED
    assert check([good.replace('username="alice"', 'username="bob"')]) is AuthOutcome.FAILED
    assert check([good], at="192.0.2.99") is AuthOutcome.FAILED  # a nonce issued to another
    assert check([good], request_uri="sip:bot@192.0.2.8") is AuthOutcome.FAILED
    # SIPp signs sip:host:port for sip:user@host:port; the same host and port is accepted.
    sipp_style = _answer(server, source, 5.0, uri="sip:127.0.0.1")
    assert check([sipp_style]) is AuthOutcome.OK
    assert check([sipp_style], request_uri="sip:bot@127.0.0.1:5070") is AuthOutcome.FAILED
    assert check([_answer(server, source, 5.0, uri="not a uri")]) is AuthOutcome.FAILED
    assert check([good], now=60.0) is AuthOutcome.STALE


def test_server_checks_sha256_and_auth_int_answers() -> None:
    server = DigestServer(Credentials("alice", "pw"), realm="r", secret=SECRET)
    nonce = make_nonce(SECRET, 1.0, "s")
    challenge = Challenge(realm="r", nonce=nonce, algorithm="SHA-256", qop=("auth-int",))
    value = build_authorization(challenge, Credentials("alice", "pw"), method="INVITE",
                                uri="sip:x@y", cnonce="n", body=b"v=0\r\n")
    assert server.check([value], method="INVITE", uri="sip:x@y", source="s", now=2.0,
                        body=b"v=0\r\n") is AuthOutcome.OK
    assert server.check([value], method="INVITE", uri="sip:x@y", source="s", now=2.0,
                        body=b"v=1\r\n") is AuthOutcome.FAILED


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Basic abc", "unsupported authentication scheme 'Basic'"),
        ('Digest username="a", realm="r", nonce="n", uri="u"', "authorization lacks response"),
        ('Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',
         "authorization has qop but lacks nc or cnonce"),
        ("Digest broken", "malformed authorization parameter 'broken'"),
        ("Digest " + "a" * 5000, "authorization is too long"),
    ],
)
def test_bad_authorizations(value: str, message: str) -> None:
    with pytest.raises(DigestError, match=message):
        parse_authorization(value)


def test_parse_authorization_from_sipp() -> None:
    value = ('Digest username="alice",realm="callstream",cnonce="6b8b4567",nc=00000001,'
             'qop=auth,uri="sip:bot@127.0.0.1:5060",nonce="1f4.abc",'
             'response="0123456789abcdef0123456789abcdef",algorithm=MD5')
    parsed = parse_authorization(value)
    assert parsed == Authorization(
        username="alice", realm="callstream", nonce="1f4.abc", uri="sip:bot@127.0.0.1:5060",
        response="0123456789abcdef0123456789abcdef", algorithm="MD5", qop="auth",
        nc="00000001", cnonce="6b8b4567")
