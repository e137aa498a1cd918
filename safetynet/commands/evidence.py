"""``safetynet evidence``: preserve, stop, export, hold and verify evidence clips.

``verify`` works offline on an exported clip folder and needs nothing but the files and the
recording agent's public key; the others talk to the running core with an operator token.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import grpc

from safetynet.commands.arguments import Subcommands, moment
from safetynet.commands.core_connection import Metadata, add_core_call_flags, call_core
from safetynet.commands.exceptions import EXIT_FAILED, EXIT_OK, UserError


def evidence_service(channel: grpc.aio.Channel) -> Any:
    """An ``EvidenceService`` stub on ``channel`` (untyped generated code, handed out as Any)."""
    from protos.safetynet.v1 import core_pb2_grpc

    return core_pb2_grpc.EvidenceServiceStub(channel)


def _clip_row(clip: Any) -> dict[str, Any]:
    return {"clip_id": clip.clip_id, "camera_id": clip.camera_id, "district_id": clip.district_id,
            "incident_id": clip.incident_id, "state": clip.state,
            "manifest_sha256": clip.manifest_sha256, "segments": clip.segments,
            "end_reason": clip.end_reason,
            "expires_at": clip.expires_at.ToJsonString() if clip.HasField("expires_at") else None}


def _print_clips(clips: list[Any], as_json: bool) -> None:
    rows = [_clip_row(c) for c in clips]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(f"{row['clip_id']}  {row['camera_id']:<16} {row['state']:<10} "
              f"segments={row['segments']} {row['manifest_sha256'][:16]}")


def cmd_preserve(args: argparse.Namespace) -> int:
    from protos.safetynet.v1 import core_pb2

    if args.max_seconds < 0:
        raise UserError("--max-seconds must not be negative")

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        response = await evidence_service(channel).Preserve(
            core_pb2.PreserveEvidenceRequest(incident_id=args.incident, camera_ids=args.camera,
                                             max_seconds=args.max_seconds), metadata=metadata)
        _print_clips(list(response.clips), args.json)
        return EXIT_OK

    return call_core(args, body)


def cmd_stop(args: argparse.Namespace) -> int:
    from protos.safetynet.v1 import core_pb2

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        clip = await evidence_service(channel).Stop(
            core_pb2.StopEvidenceRequest(clip_id=args.clip_id), metadata=metadata)
        _print_clips([clip], args.json)
        return EXIT_OK

    return call_core(args, body)


def cmd_list(args: argparse.Namespace) -> int:
    from protos.safetynet.v1 import core_pb2

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        response = await evidence_service(channel).List(
            core_pb2.ListEvidenceRequest(incident_id=args.incident or ""), metadata=metadata)
        _print_clips(list(response.clips), args.json)
        return EXIT_OK

    return call_core(args, body)


def cmd_hold(args: argparse.Namespace) -> int:
    from protos.safetynet.v1 import core_pb2

    request = core_pb2.HoldEvidenceRequest(clip_id=args.clip_id, reason=args.reason)
    request.hold_until.FromDatetime(moment(args.until, "--until"))

    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        clip = await evidence_service(channel).Hold(request, metadata=metadata)
        _print_clips([clip], args.json)
        return EXIT_OK

    return call_core(args, body)


async def export_clip(stub: Any, clip_id: str, out: Path, metadata: Metadata) -> list[str]:
    """Write the exported clip's files into ``out`` (created, 0700; files 0600)."""
    from protos.safetynet.v1 import core_pb2

    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    written: dict[str, Any] = {}
    try:
        async for chunk in stub.Export(core_pb2.ExportEvidenceRequest(clip_id=clip_id),
                                       metadata=metadata):
            name = Path(chunk.file).name
            if name != chunk.file or name.startswith("."):
                raise UserError(f"the core sent a file with an unsafe name: {chunk.file!r}",
                                EXIT_FAILED)
            if name not in written:
                fd = os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                written[name] = os.fdopen(fd, "wb")
            written[name].write(chunk.data)
    finally:
        for handle in written.values():
            handle.close()
    return list(written)


def cmd_export(args: argparse.Namespace) -> int:
    async def body(channel: grpc.aio.Channel, metadata: Metadata) -> int:
        files = await export_clip(evidence_service(channel), args.clip_id,
                                  Path(args.out), metadata)
        print(f"exported {args.clip_id}: {len(files)} files in {args.out}; check it with "
              f"`safetynet evidence verify {args.out} {args.out}/manifest.json "
              f"--public-key {args.out}/agent.pub`")
        return EXIT_OK

    return call_core(args, body)


def cmd_verify(args: argparse.Namespace) -> int:
    from runtime.evidence_manifest import ManifestError, load_public_key, verify_clip

    clip_dir, manifest = Path(args.clip), Path(args.manifest)
    if not clip_dir.is_dir():
        raise UserError(f"{clip_dir}: not a clip folder")
    try:
        key = load_public_key(Path(args.public_key))
    except (OSError, ManifestError) as exc:
        raise UserError(f"--public-key: {exc}") from exc
    result = verify_clip(clip_dir, manifest, key)
    if args.json:
        print(json.dumps({"ok": result.ok, "problems": result.problems,
                          "segments": result.segments,
                          "manifest_sha256": result.manifest_sha256}, indent=2))
    elif result.ok:
        print(f"OK: {result.segments} segments, manifest sha256 {result.manifest_sha256}, "
              f"camera {result.manifest.get('camera_id')}, "
              f"incident {result.manifest.get('incident_id')}")
    else:
        for problem in result.problems:
            print(f"BROKEN: {problem}")
    return EXIT_OK if result.ok else EXIT_FAILED


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet evidence preserve|stop|list|hold|export|verify``."""
    p = subcommands.add_parser(
        "evidence", help="preserve, export and verify evidence clips",
        description="Evidence clips: the camera's own H.264 kept at the district, hashed, signed "
                    "by its agent, on the audit chain.")
    ev = p.add_subparsers(dest="evidence_command", metavar="ACTION", required=True)
    q = ev.add_parser("preserve", help="start clips of cameras under an open incident",
                      description="Start a clip of each camera (recorded at its district's agent).")
    q.add_argument("--incident", required=True, help="the open incident the clip is for")
    q.add_argument("--camera", action="append", required=True, help="camera id (repeatable)")
    q.add_argument("--max-seconds", type=float, default=0.0,
                   help="stop after this long (default: the policy's maximum)")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_preserve)
    q = ev.add_parser("stop", help="stop a clip and seal it", description="Stop and seal a clip.")
    q.add_argument("clip_id", metavar="CLIP")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_stop)
    q = ev.add_parser("list", help="list clips you may see", description="List evidence clips.")
    q.add_argument("--incident", help="only this incident's")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_list)
    _register_custody(ev)


def _register_custody(ev: Subcommands) -> None:
    q = ev.add_parser("hold", help="place a legal hold (supervisors)",
                      description="Keep a clip beyond its retention until --until.")
    q.add_argument("clip_id", metavar="CLIP")
    q.add_argument("--until", required=True, help="ISO date or time the hold ends")
    q.add_argument("--reason", required=True, help="why (recorded)")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_hold)
    q = ev.add_parser("export", help="export a sealed clip through the core (audited)",
                      description="Fetch a sealed clip's files: manifest.json, segments, agent.pub.")
    q.add_argument("clip_id", metavar="CLIP")
    q.add_argument("--out", required=True, metavar="DIR", help="folder to write the files into")
    add_core_call_flags(q)
    q.set_defaults(func=cmd_export)
    q = ev.add_parser("verify", help="check a clip offline against its signed manifest",
                      description="Exit 0 and OK when the signature and every segment hold; "
                                  "1 naming each problem otherwise.")
    q.add_argument("clip", metavar="CLIP", help="the clip's folder (its segments)")
    q.add_argument("manifest", metavar="MANIFEST", help="its manifest.json")
    q.add_argument("--public-key", required=True, metavar="FILE",
                   help="the recording agent's public key (PEM), e.g. the exported agent.pub "
                        "checked against the key id on the audit chain")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_verify)
