"""Signing keys and signature headers (spec §8), checked with PyNaCl and the Telnyx SDK."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from nacl.signing import VerifyKey
from telnyx import Telnyx

from callstream.config import Settings
from callstream.webhooks.exceptions import SigningKeyError
from callstream.webhooks.signing import (
    KEY_FILE_NAME,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSigner,
    load_or_create_seed,
    load_signer,
)

BODY = b'{"data":{"event_type":"call.initiated","id":"e1"},"meta":{"attempt":1}}'


def test_key_is_generated_once_into_the_data_dir_with_0600(tmp_path: Path) -> None:
    first = load_signer(Settings(data_dir=tmp_path))
    path = tmp_path / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_text().strip(), validate=True)) == 32
    again = load_signer(Settings(data_dir=tmp_path))
    assert again.public_key_b64 == first.public_key_b64
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_public_key_is_base64_of_the_raw_32_bytes(signer: WebhookSigner) -> None:
    assert len(signer.public_key_b64) == 44
    assert base64.b64decode(signer.public_key_b64, validate=True) == signer.public_key


def test_seed_setting_wins_over_the_key_file(tmp_path: Path) -> None:
    seed = bytes(range(32))
    settings = Settings(data_dir=tmp_path, webhook_signing_seed=base64.b64encode(seed).decode())
    assert load_signer(settings).public_key == WebhookSigner(seed).public_key
    assert not (tmp_path / KEY_FILE_NAME).exists()


@pytest.mark.parametrize("seed", ["not base64!", base64.b64encode(b"short").decode(), ""])
def test_bad_seed_setting_is_refused(tmp_path: Path, seed: str) -> None:
    settings = Settings(data_dir=tmp_path, webhook_signing_seed=seed or "=")
    with pytest.raises(SigningKeyError, match="webhook_signing_seed"):
        load_signer(settings)


def test_corrupt_key_file_is_refused_not_replaced(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE_NAME).write_text("garbage")
    with pytest.raises(SigningKeyError, match="webhook signing key"):
        load_signer(Settings(data_dir=tmp_path))
    assert (tmp_path / KEY_FILE_NAME).read_text() == "garbage"


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    seeds: list[bytes] = []
    threads = [threading.Thread(target=lambda: seeds.append(load_or_create_seed(path)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seeds)) == 1


def test_signature_is_ed25519_over_timestamp_pipe_body(signer: WebhookSigner) -> None:
    headers = signer.headers(BODY, 1714557601)
    assert headers[TIMESTAMP_HEADER] == "1714557601"
    signature = base64.b64decode(headers[SIGNATURE_HEADER], validate=True)
    assert len(headers[SIGNATURE_HEADER]) == 88
    VerifyKey(signer.public_key).verify(b"1714557601|" + BODY, signature)


def test_the_sdk_verifier_accepts_and_rejects(signer: WebhookSigner) -> None:
    client = Telnyx(api_key="x", public_key=signer.public_key_b64)
    now = int(time.time())
    headers = signer.headers(BODY, now)
    event = client.webhooks.unwrap(BODY.decode(), headers=headers)
    assert event.data is not None
    with pytest.raises(ValueError, match="Signature verification failed"):
        client.webhooks.unwrap(BODY.decode().replace("e1", "e2"), headers=headers)
    with pytest.raises(ValueError, match="Signature verification failed"):
        client.webhooks.unwrap(BODY.decode(), headers={**headers, TIMESTAMP_HEADER: str(now + 1)})
    old = signer.headers(BODY, now - 301)
    with pytest.raises(ValueError, match="too old"):
        client.webhooks.unwrap(BODY.decode(), headers=old)


def test_standard_webhooks_headers_are_off_by_default_and_hmac_when_set() -> None:
    seed = os.urandom(32)
    assert "webhook-signature" not in WebhookSigner(seed).headers(BODY, 1)
    secret = os.urandom(24)
    signer = WebhookSigner(seed, standard_secret=secret)
    headers = signer.headers(BODY, 1714557601, event_id="evt-1")
    assert headers["webhook-id"] == "evt-1"
    assert headers["webhook-timestamp"] == "1714557601"
    expected = hmac.new(secret, b"evt-1.1714557601." + BODY, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()


def test_standard_secret_setting_is_parsed(tmp_path: Path) -> None:
    secret = base64.b64encode(b"k" * 24).decode()
    settings = Settings(data_dir=tmp_path, webhook_standard_secret=f"whsec_{secret}")
    assert "webhook-signature" in load_signer(settings).headers(BODY, 1, event_id="x")
    with pytest.raises(SigningKeyError, match="whsec_"):
        load_signer(Settings(data_dir=tmp_path, webhook_standard_secret="whsec_!!"))


def test_the_peer_token_is_one_per_key_and_shows_nothing_of_it() -> None:
    one, same, other = (WebhookSigner(b"\x01" * 32), WebhookSigner(b"\x01" * 32),
                        WebhookSigner(b"\x02" * 32))
    assert one.peer_token() == same.peer_token() != other.peer_token()
    assert len(one.peer_token()) == 64 and (b"\x01" * 32).hex() not in one.peer_token()
