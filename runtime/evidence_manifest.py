"""An evidence clip's manifest: what was recorded, by whom, and the hash of every segment.

The agent that recorded the clip signs the manifest with its own Ed25519 key; the SHA-256 of
``manifest.json``'s bytes goes on the core's audit chain. ``verify_clip`` checks a clip offline
against the agent's public key: signature, every segment's presence, size and hash.

``manifest.json`` is ``{"manifest": {...}, "signature": "<hex>"}``; the signature covers the
canonical JSON of ``manifest`` (sorted keys, no spaces, UTF-8).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from runtime.grant import key_id_for

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20


class ManifestError(Exception):
    """A manifest or key file that cannot be read as one (the message names what is wrong)."""


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_manifest(body: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    """``manifest.json``'s bytes for ``body``, signed by ``key`` (whose id the body names)."""
    public = key.public_key()
    body = {**body, "version": MANIFEST_VERSION, "agent_key_id": key_id_for(public),
            "agent_public_key": raw_public_key(public).hex()}
    signature = key.sign(canonical_json(body)).hex()
    return json.dumps({"manifest": body, "signature": signature}, indent=2, sort_keys=True,
                      ensure_ascii=False).encode() + b"\n"


@dataclass
class ClipVerification:
    """What ``verify_clip`` found; ``ok`` only when there is no problem at all."""

    problems: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    manifest_sha256: str = ""
    segments: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM (SubjectPublicKeyInfo) or raw 32-byte Ed25519 public key file; ManifestError otherwise."""
    data = path.read_bytes()
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ManifestError(f"{path}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ManifestError(f"{path}: not an Ed25519 public key")
    return key


def read_manifest(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The manifest body and its signature; ManifestError naming what is malformed."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"the manifest is not JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("manifest"), dict):
        raise ManifestError("the manifest has no 'manifest' object")
    try:
        signature = bytes.fromhex(str(document.get("signature", "")))
    except ValueError as exc:
        raise ManifestError("the manifest's signature is not hex") from exc
    body: dict[str, Any] = document["manifest"]
    if not isinstance(body.get("segments"), list):
        raise ManifestError("the manifest lists no segments")
    return body, signature


def verify_clip(clip_dir: Path, manifest_path: Path,
                public_key: Ed25519PublicKey) -> ClipVerification:
    """Check the clip in ``clip_dir`` against its manifest and the recording agent's key."""
    result = ClipVerification()
    try:
        data = manifest_path.read_bytes()
        result.manifest_sha256 = hashlib.sha256(data).hexdigest()
        body, signature = read_manifest(data)
    except (OSError, ManifestError) as exc:
        result.problems.append(str(exc))
        return result
    result.manifest = body
    try:
        public_key.verify(signature, canonical_json(body))
    except InvalidSignature:
        result.problems.append("the manifest's signature does not verify with the given "
                               f"agent key ({key_id_for(public_key)})")
    for index, segment in enumerate(body["segments"]):
        problem = _segment_problem(clip_dir, segment, index)
        if problem:
            result.problems.append(problem)
        else:
            result.segments += 1
    if not body["segments"]:
        result.problems.append("the manifest lists no segments")
    return result


def _segment_problem(clip_dir: Path, segment: Any, index: int) -> str | None:
    if not isinstance(segment, dict) or not isinstance(segment.get("file"), str):
        return f"segment {index}: malformed entry"
    name = segment["file"]
    if "/" in name or "\\" in name or name.startswith("."):
        return f"segment {index}: file name {name!r} is not a plain name"
    path = clip_dir / name
    if not path.is_file():
        return f"segment {name}: missing"
    if path.stat().st_size != segment.get("bytes"):
        return f"segment {name}: {path.stat().st_size} bytes, the manifest says {segment.get('bytes')}"
    if file_sha256(path) != segment.get("sha256"):
        return f"segment {name}: SHA-256 differs from the manifest's"
    return None
