"""The webhook signing key, and the signature headers of each attempt (spec §8).

Telnyx signs ``f"{timestamp}|{raw body}"`` with Ed25519 (RFC 8032, pure) and sends::

    telnyx-timestamp: 1714557601
    telnyx-signature-ed25519: <standard base64 of the 64-byte signature, padded>

The verifier (``telnyx`` SDK ``client.webhooks.unwrap``) takes the public key as standard
base64 of the raw 32 bytes, which :attr:`WebhookSigner.public_key_b64` gives. The body
signed must be byte for byte the body sent, so callers sign the exact bytes they put on
the wire and never re-serialise.

The private key is a 32-byte seed, from the ``webhook_signing_seed`` setting or else
generated on first start into ``<data_dir>/webhook_signing_key`` (base64, mode 0600).

Optionally (spec §12 item 1) the same attempt can also carry Standard Webhooks headers
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<HMAC-SHA256>``) for
old SDK builds that verified that way; off unless ``webhook_standard_secret`` is set.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from nacl.signing import SigningKey

from callstream.webhooks.exceptions import SigningKeyError

if TYPE_CHECKING:
    from callstream.config import Settings

log = logging.getLogger(__name__)

KEY_FILE_NAME = "webhook_signing_key"
SEED_SIZE = 32
TIMESTAMP_HEADER = "telnyx-timestamp"
SIGNATURE_HEADER = "telnyx-signature-ed25519"
STANDARD_SECRET_PREFIX = "whsec_"


def decode_seed(value: str, *, what: str) -> bytes:
    """Decode a base64 Ed25519 seed, strictly (standard alphabet, 32 bytes).

    Raises:
        SigningKeyError: naming ``what`` when the value is not base64 of 32 bytes.
    """
    try:
        seed = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningKeyError(f"{what} is not valid base64: {exc}") from exc
    if len(seed) != SEED_SIZE:
        raise SigningKeyError(f"{what} must decode to {SEED_SIZE} bytes, got {len(seed)}")
    return seed


def decode_standard_secret(value: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64)."""
    raw = value.removeprefix(STANDARD_SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningKeyError(f"webhook_standard_secret is not whsec_<base64>: {exc}") from exc
    if not key:
        raise SigningKeyError("webhook_standard_secret is empty")
    return key


class WebhookSigner:
    """Signs webhook attempts; holds the private key.

    Args:
        seed: the 32-byte Ed25519 seed.
        standard_secret: HMAC key for the optional Standard Webhooks headers.
    """

    __slots__ = ("_key", "_standard_secret", "public_key", "public_key_b64")

    def __init__(self, seed: bytes, *, standard_secret: bytes | None = None) -> None:
        if len(seed) != SEED_SIZE:
            raise SigningKeyError(f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(seed)}")
        self._key = SigningKey(seed)
        self._standard_secret = standard_secret
        #: The raw 32-byte public key.
        self.public_key: bytes = bytes(self._key.verify_key)
        #: Standard base64 of the raw public key: the value of ``TELNYX_PUBLIC_KEY``.
        self.public_key_b64: str = base64.b64encode(self.public_key).decode("ascii")

    def peer_token(self) -> str:
        """The secret the processes of one deployment show each other on their internal
        requests (``/internal/...``, :mod:`callstream.calls.remote_bridge`). Derived from
        the signing key, which they all share already (one public key for every
        webhook), so there is no second secret to distribute; one-way, so it gives
        nothing of the key away."""
        return hmac.new(bytes(self._key), b"callstream peer token v1",
                        hashlib.sha256).hexdigest()

    def signature(self, body: bytes, timestamp: int) -> str:
        """Base64 Ed25519 signature of ``b"{timestamp}|" + body``."""
        message = b"%d|%b" % (timestamp, body)
        return base64.b64encode(self._key.sign(message).signature).decode("ascii")

    def headers(self, body: bytes, timestamp: int, *, event_id: str = "") -> dict[str, str]:
        """The signature headers for one attempt whose raw body is ``body``.

        Args:
            body: the exact bytes sent (for a form GET, the query string).
            timestamp: Unix seconds; sent as ``telnyx-timestamp`` and signed.
            event_id: ``data.id``; used only by the Standard Webhooks headers.
        """
        headers = {
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: self.signature(body, timestamp),
        }
        if self._standard_secret is not None:
            mac = hmac.new(
                self._standard_secret, b"%b.%d.%b" % (event_id.encode(), timestamp, body),
                hashlib.sha256,
            ).digest()
            headers["webhook-id"] = event_id
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = "v1," + base64.b64encode(mac).decode("ascii")
        return headers


def load_or_create_seed(path: Path) -> bytes:
    """Read the seed file at ``path``, creating it (0600) with a fresh seed if absent.

    Creation is atomic: the seed is written to a temporary file and hard-linked into
    place, so a crash never leaves a half-written key and two processes starting at
    once agree on one key.

    Raises:
        SigningKeyError: the file exists but does not hold a valid seed, or cannot be written.
    """
    with contextlib.suppress(FileNotFoundError):
        return _read_seed(path)
    seed = os.urandom(SEED_SIZE)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, base64.b64encode(seed) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_seed(path)  # another process won the race: use its key
    except OSError as exc:
        raise SigningKeyError(f"cannot create webhook signing key {path}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    log.info("created webhook signing key %s", path)
    return seed


def _read_seed(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        text = path.read_text("ascii")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"cannot read webhook signing key {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("webhook signing key %s is readable by others; chmod 600 it", path)
    return decode_seed(text, what=f"webhook signing key {path}")


def load_signer(settings: Settings) -> WebhookSigner:
    """The signer for these settings: the seed setting if given, else the data-dir key file.

    Raises:
        SigningKeyError: the seed setting or key file is invalid.
    """
    if settings.webhook_signing_seed:
        seed = decode_seed(settings.webhook_signing_seed, what="webhook_signing_seed")
    else:
        seed = load_or_create_seed(settings.data_dir / KEY_FILE_NAME)
    secret = settings.webhook_standard_secret
    return WebhookSigner(
        seed, standard_secret=decode_standard_secret(secret) if secret else None
    )
