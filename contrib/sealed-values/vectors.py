#!/usr/bin/env python3
"""A second, independent implementation of sealed values (PROTOCOL.md part 4, "Sealed
values"), in Python with the `cryptography` package, to check vectors.json against.

    contrib/sealed-values/vectors.py            # check vectors.json, exit 1 on any mismatch
    contrib/sealed-values/vectors.py --write    # recompute vectors.json from its inputs

The Rust unit test `seal::tests::test_vectors` checks the same file against the agent's code,
so the two implementations agree byte for byte or one of them fails.
"""

import base64
import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "ccs1."
KEY_INFO = b"clusterctx sealed values v1"
FINGERPRINT_LABEL = b"clusterctx cluster secret fingerprint v1"
VECTORS = Path(__file__).with_name("vectors.json")


def derive_key(secret: str, pin: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=pin.encode(), info=KEY_INFO
    ).derive(secret.encode())


def associated_data(pin: str, key: str) -> bytes:
    out = b""
    for field in (pin.encode(), key.encode()):
        out += struct.pack(">I", len(field)) + field
    return out


def fingerprint(secret: str) -> str:
    return hmac.new(secret.encode(), FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:32]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def seal(secret: str, pin: str, key: str, nonce: bytes, plaintext: str) -> str:
    sealed = AESGCM(derive_key(secret, pin)).encrypt(
        nonce, plaintext.encode(), associated_data(pin, key)
    )
    return PREFIX + b64url(nonce + sealed)


def opens(secret: str, pin: str, key: str, text: str) -> bool:
    if not text.startswith(PREFIX):
        return False
    body = text[len(PREFIX):]
    try:
        payload = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
    except ValueError:
        return False
    # Canonical text only, as the Rust decoder insists: one payload, one text.
    if b64url(payload) != body or len(payload) <= 12 + 16:
        return False
    try:
        AESGCM(derive_key(secret, pin)).decrypt(
            payload[:12], payload[12:], associated_data(pin, key)
        )
    except InvalidTag:
        return False
    return True


def computed(vector: dict) -> dict:
    out = dict(vector)
    out["derived_key_hex"] = derive_key(vector["secret"], vector["pin"]).hex()
    out["associated_data_hex"] = associated_data(vector["pin"], vector["key"]).hex()
    out["secret_fingerprint"] = fingerprint(vector["secret"])
    out["sealed"] = seal(
        vector["secret"],
        vector["pin"],
        vector["key"],
        bytes.fromhex(vector["nonce_hex"]),
        vector["plaintext"],
    )
    return out


def main() -> int:
    doc = json.loads(VECTORS.read_text())
    if sys.argv[1:] == ["--write"]:
        doc["vectors"] = [computed(v) for v in doc["vectors"]]
        VECTORS.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return 0
    failures = 0
    for v in doc["vectors"]:
        if computed(v) != v or not opens(v["secret"], v["pin"], v["key"], v["sealed"]):
            print(f"MISMATCH: {v['pin']} {v['key']}", file=sys.stderr)
            failures += 1
    for v in doc["must_not_open"]:
        if opens(v["secret"], v["pin"], v["key"], v["sealed"]):
            print(f"OPENS but must not: {v['why']}", file=sys.stderr)
            failures += 1
    total = len(doc["vectors"]) + len(doc["must_not_open"])
    print(f"{total - failures}/{total} vectors agree")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
