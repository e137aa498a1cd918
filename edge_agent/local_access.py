"""Local mode: the agent decides its own district's views while the core is unreachable.

Only **standing access** is decided here: an operator of this district (role ``operator`` or
``supervisor``, credential issued into the district's bundle) may view this district's cameras.
No incident grant, break-glass window or evidence clip is ever invented locally. Every sign-in,
decision and view end is written to the local journal *before* it takes effect; if the journal
cannot be written the request is refused (fail closed, like the core's audit log).

``CoreReachability`` says which mode the agent is in: the core is reachable while the MQTT link
is up and the retained status of at least one core replica (``topics.core_status_route(replica)``,
each replica's last will ``online = false``) says online: one replica dying while another serves
changes nothing. Views are served locally only while it is not, and switching back needs no
restart: the next request simply finds the core reachable again.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import tomllib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import structlog

from edge_agent.exceptions import ConfigError, JournalError, LocalAccessRefused
from edge_agent.local_journal import LocalJournal
from runtime import local_credentials

log = structlog.get_logger(__name__)

VIEW_ROLES = frozenset({"operator", "supervisor"})
MAX_SIGN_INS = 256
LOCAL_PURPOSE = "district standing access, local mode (core unreachable)"


@dataclass(frozen=True, slots=True)
class LocalOperator:
    operator_id: str
    role: str
    secret_hash: str


@dataclass(frozen=True, slots=True)
class LocalSignIn:
    """A signed-in operator: ``token`` is shown once; the agent keeps only its SHA-256."""

    token: str
    operator: LocalOperator
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LocalView:
    """A local view the journal allowed: who, which camera, until when."""

    session_id: str
    operator: LocalOperator
    camera_id: str
    expires_at: datetime


def load_local_operators(path: Path, district_id: str) -> dict[str, LocalOperator]:
    """Read ``local-operators.toml``; ConfigError naming the file and what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "local credentials file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    if path.stat().st_mode & 0o077:
        raise ConfigError(str(path), "holds credential hashes: it must not be readable by "
                                     "group or others (chmod 600)")
    if data.get("district") != district_id:
        raise ConfigError(str(path), f"is for district {data.get('district')!r}, not {district_id!r}")
    operators: dict[str, LocalOperator] = {}
    for i, entry in enumerate(data.get("operators", []), start=1):
        try:
            operator = LocalOperator(str(entry["id"]), str(entry["role"]), str(entry["secret_hash"]))
        except (KeyError, TypeError) as exc:
            raise ConfigError(str(path), f"operators[{i}] needs id, role and secret_hash") from exc
        operators[operator.operator_id] = operator
    return operators


class CoreReachability:
    """Which mode the agent is in; ``wait_for(reachable)`` waits for a switch."""

    def __init__(self, link_up: Callable[[], bool]) -> None:
        self._link_up = link_up
        self._online: dict[str, bool] = {}  # replica -> its last status; empty: none seen yet
        self._changed = asyncio.Condition()

    @property
    def reachable(self) -> bool:
        return self._link_up() and any(self._online.values())

    async def core_status(self, online: bool, replica: str = "safetynet-core") -> None:
        """Replica ``replica`` said it is ``online`` (or its last will said it is not)."""
        before = any(self._online.values())
        if self._online.get(replica) != online:
            log.info("core replica status", replica=replica, online=online)
        self._online[replica] = online
        if any(self._online.values()) != before:
            log.info("core status", online=not before,
                     replicas=sorted(r for r, up in self._online.items() if up))
        async with self._changed:
            self._changed.notify_all()

    async def link_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, reachable: bool, timeout: float) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.reachable == reachable)


class LocalAccess:
    """Sign-in with a local credential and standing-access decisions, all journaled."""

    def __init__(self, *, district_id: str, operators: dict[str, LocalOperator],
                 camera_ids: Collection[str], journal: LocalJournal, core: CoreReachability,
                 session: timedelta) -> None:
        self.district_id = district_id
        self.journal = journal
        self.core = core
        self._operators = operators
        self._cameras = frozenset(camera_ids)
        self._session = session
        self._signed_in: dict[str, LocalSignIn] = {}  # sha256(token) -> sign-in
        self.views: dict[str, LocalView] = {}
        self._log = log.bind(district=district_id)

    async def sign_in(self, credential: str, source: str) -> LocalSignIn:
        """Check ``credential`` (scrypt, off the event loop); LocalAccessRefused naming why."""
        try:
            parsed = local_credentials.parse(credential)
        except ValueError as exc:
            self._refuse_sign_in("(unreadable)", source, 400, "bad_credential", str(exc))
        if parsed.district_id != self.district_id:
            self._refuse_sign_in(
                parsed.operator_id, source, 403, "wrong_district",
                f"this credential belongs to district {parsed.district_id!r}; this is the local "
                f"console of district {self.district_id!r}")
        operator = self._operators.get(parsed.operator_id)
        matches = operator is not None and await asyncio.to_thread(
            local_credentials.secret_matches, parsed.secret, operator.secret_hash)
        if operator is None or not matches:
            self._refuse_sign_in(parsed.operator_id, source, 401, "bad_credential",
                                 "unknown operator or wrong secret")
        if operator.role not in VIEW_ROLES:
            self._refuse_sign_in(operator.operator_id, source, 403, "role_not_allowed",
                                 f"role {operator.role!r} may not view video")
        self._record("local.sign_in", operator.operator_id, details={"source": source,
                                                                     "role": operator.role})
        token = secrets.token_urlsafe(32)
        signed_in = LocalSignIn(token, operator, datetime.now(UTC) + self._session)
        self._forget_expired()
        if len(self._signed_in) >= MAX_SIGN_INS:
            self._signed_in.pop(next(iter(self._signed_in)))  # the oldest goes; logged below
            self._log.warning("local sign-ins full, dropped the oldest", limit=MAX_SIGN_INS)
        self._signed_in[_digest(token)] = signed_in
        return signed_in

    def signed_in(self, token: str) -> LocalSignIn:
        found = self._signed_in.get(_digest(token))
        if found is None or found.expires_at <= datetime.now(UTC):
            raise LocalAccessRefused(401, "unauthenticated",
                                     "sign in first: POST /local/sign-in with your local credential")
        return found

    def open_view(self, token: str, camera_id: str, source: str) -> LocalView:
        """Decide a view of ``camera_id``: allowed only in local mode, for this district's cameras."""
        operator = self.signed_in(token).operator
        if self.core.reachable:
            self._refuse_view(operator, camera_id, source, 409, "core_reachable",
                              "the core is reachable: open cameras through the core's console "
                              "(local mode serves only while the core is down)")
        if camera_id not in self._cameras:
            self._refuse_view(operator, camera_id, source, 404, "camera_unknown",
                              f"camera {camera_id!r} is not in district {self.district_id!r}")
        view = LocalView(f"local-{secrets.token_hex(8)}", operator, camera_id,
                         datetime.now(UTC) + self._session)
        self._record("local.view", operator.operator_id, camera_id=camera_id,
                     session_id=view.session_id,
                     details={"source": source, "basis": "district-own", "purpose": LOCAL_PURPOSE,
                              "expires_at": view.expires_at.isoformat()})
        self.views[view.session_id] = view
        return view

    def view_ended(self, session_id: str, reason: str, duration_seconds: float,
                   bytes_sent: int) -> None:
        view = self.views.pop(session_id, None)
        if view is None:
            return
        try:
            self._record("local.view_end", view.operator.operator_id, camera_id=view.camera_id,
                         session_id=session_id,
                         details={"reason": reason, "duration_seconds": round(duration_seconds, 3),
                                  "bytes_sent": bytes_sent})
        except LocalAccessRefused:
            self._log.error("local view end not journaled", session=session_id)

    def _refuse_sign_in(self, operator_id: str, source: str, status: int, kind: str,
                        message: str) -> NoReturn:
        self._record("local.sign_in", operator_id, outcome="denied", reason=message,
                     details={"source": source})
        raise LocalAccessRefused(status, kind, message)

    def _refuse_view(self, operator: LocalOperator, camera_id: str, source: str, status: int,
                     kind: str, message: str) -> NoReturn:
        self._record("local.view", operator.operator_id, camera_id=camera_id, outcome="denied",
                     reason=message, details={"source": source})
        raise LocalAccessRefused(status, kind, message)

    def _record(self, action: str, operator_id: str, *, camera_id: str = "", session_id: str = "",
                outcome: str = "ok", reason: str = "", details: dict[str, object] | None = None,
                ) -> None:
        try:
            self.journal.append(action, operator_id, camera_id=camera_id, session_id=session_id,
                                outcome=outcome, reason=reason, details=details)
        except JournalError as exc:
            self._log.error("local journal unavailable, refusing", error=exc.detail)
            raise LocalAccessRefused(503, "journal_unavailable",
                                     "the local journal cannot be written; access is refused "
                                     "until it can") from exc

    def _forget_expired(self) -> None:
        now = datetime.now(UTC)
        for key in [k for k, s in self._signed_in.items() if s.expires_at <= now]:
            del self._signed_in[key]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
