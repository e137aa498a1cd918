"""Reading the policy file: TOML in, a validated :class:`Policy` out, or an error naming the key.

The file's schema is documented at the top of the shipped ``cloud_core/policy.toml``. Every key is
checked for type and range, and a key nobody reads is refused: a misspelt key must not silently
weaken the policy.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import structlog

from cloud_core.exceptions import PolicyError
from cloud_core.policy.model import BREAK_GLASS_LIMIT, DISTRICT_AGENCY_PREFIX, Role
from cloud_core.policy.rules import (
    BreakGlassRules,
    EvidenceRules,
    Policy,
    ServicePolicy,
    SessionCaps,
    StandingAccess,
)

log = structlog.get_logger(__name__)

SCHEMA_VERSION: Final = 1
MAX_FOLLOW_POSITIONS: Final = 100
MAX_SESSION_CAP: Final = 10_000
"""No cap above this: an agent serves a few hundred viewers (edge_agent ``max_sessions``)."""

_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]*")
_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")


def load_policy(path: str | Path) -> Policy:
    """Read and validate the policy file at ``path``.

    Raises PolicyError naming the file and the exact key and problem: unreadable file, invalid
    TOML, missing or unknown key, wrong type, out-of-range value, unknown agency, an incident
    type served by two services or both served and refused.
    """
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(source, f"cannot be read: {exc.strerror or exc}") from exc
    policy = parse_policy(raw, source)
    log.info(
        "policy.loaded",
        source=source,
        services=len(policy.services),
        incident_types=len(policy.incident_types),
    )
    return policy


def parse_policy(raw: bytes | str, source: str) -> Policy:
    """Validate policy file contents ``raw``; ``source`` names it in errors."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise PolicyError(source, f"is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, f"is not valid TOML: {exc}") from exc
    return _PolicyReader(source).read(document)


@functools.cache
def default_policy() -> Policy:
    """The policy shipped with the package, read once (``cloud_core/policy.toml``)."""
    resource = resources.files("cloud_core").joinpath("policy.toml")
    return parse_policy(resource.read_bytes(), str(resource))


class _Table:
    """One TOML table being read: typed getters that name the full key path on failure."""

    def __init__(self, source: str, path: str, data: Mapping[str, Any]) -> None:
        self._source = source
        self._path = path
        self._data = data
        self._read: set[str] = set()

    def error(self, key: str | None, problem: str) -> PolicyError:
        where = self.key_path(key) if key is not None else (self._path or "top level")
        return PolicyError(self._source, f"{where}: {problem}")

    def key_path(self, key: str) -> str:
        shown = key if _BARE_KEY_RE.fullmatch(key) else f'"{key}"'
        return f"{self._path}.{shown}" if self._path else shown

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def has(self, key: str) -> bool:
        return key in self._data

    def _get(self, key: str) -> Any:
        if key not in self._data:
            raise self.error(key, "is missing")
        self._read.add(key)
        return self._data[key]

    def table(self, key: str) -> _Table:
        value = self._get(key)
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table, not {_toml_type(value)}")
        return _Table(self._source, self.key_path(key), value)

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {_toml_type(value)}")
        if not value.strip():
            raise self.error(key, "must not be empty")
        return value.strip()

    def name(self, key: str) -> str:
        value = self.text(key)
        if not _NAME_RE.fullmatch(value):
            raise self.error(key, f"{value!r} is not a valid id (a-z, 0-9 and '-')")
        return value

    def integer(self, key: str, *, minimum: int, maximum: int | None = None) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {_toml_type(value)}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be at most {maximum}, got {value}")
        return value

    def optional_integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int:
        return self.integer(key, minimum=minimum, maximum=maximum) if key in self._data else default

    def positive_number(self, key: str) -> float:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, not {_toml_type(value)}")
        try:
            number = float(value)
        except OverflowError as exc:  # a TOML integer beyond any float
            raise self.error(key, "is out of range") from exc
        if not math.isfinite(number) or number <= 0:
            raise self.error(key, f"must be a positive number, got {value}")
        return number

    def boolean(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {_toml_type(value)}")
        return value

    def names(self, key: str) -> list[str]:
        value = self._get(key)
        if not isinstance(value, list):
            raise self.error(key, f"must be a list of strings, not {_toml_type(value)}")
        if not value:
            raise self.error(key, "must not be empty")
        seen: set[str] = set()
        for index, item in enumerate(value):
            where = f"{self.key_path(key)}[{index}]"
            if not isinstance(item, str):
                raise PolicyError(
                    self._source, f"{where}: must be a string, not {_toml_type(item)}"
                )
            if not _NAME_RE.fullmatch(item):
                raise PolicyError(
                    self._source, f"{where}: {item!r} is not a valid id (a-z, 0-9 and '-')"
                )
            if item in seen:
                raise PolicyError(self._source, f"{where}: {item!r} is listed twice")
            seen.add(item)
        return list(value)

    def finish(self) -> None:
        """Refuse keys nobody read: a misspelt key must not silently weaken the policy."""
        for key in self._data:
            if key not in self._read:
                raise self.error(key, "is not a known key")


class _PolicyReader:
    """Turns a parsed TOML document into a validated :class:`Policy`."""

    def __init__(self, source: str) -> None:
        self._source = source

    def read(self, document: Mapping[str, Any]) -> Policy:
        top = _Table(self._source, "", document)
        top.integer("schema", minimum=SCHEMA_VERSION, maximum=SCHEMA_VERSION)
        agencies = self._agencies(top.table("agencies"))
        standing = self._standing(top.table("standing_access"))
        break_glass = self._break_glass(top.table("break_glass"))
        services = self._services(top.table("services"), agencies)
        refused = self._refused(top.table("refused_incident_types"), services)
        evidence = self._evidence(top.table("evidence")) if top.has("evidence") else EvidenceRules()
        caps = (self._session_caps(top.table("session_caps")) if top.has("session_caps")
                else SessionCaps())
        top.finish()
        return Policy(
            source=self._source,
            agencies=MappingProxyType(agencies),
            services=MappingProxyType(services),
            refused_incident_types=MappingProxyType(refused),
            standing=standing,
            break_glass=break_glass,
            evidence=evidence,
            session_caps=caps,
        )

    def _session_caps(self, table: _Table) -> SessionCaps:
        defaults = SessionCaps()
        caps = SessionCaps(
            per_operator=table.optional_integer("per_operator", defaults.per_operator,
                                                minimum=1, maximum=MAX_SESSION_CAP),
            standing_per_agency=table.optional_integer(
                "standing_per_agency", defaults.standing_per_agency, minimum=1,
                maximum=MAX_SESSION_CAP))
        table.finish()
        return caps

    def _evidence(self, table: _Table) -> EvidenceRules:
        roles = frozenset(Role(r) for r in table.names("roles")) if table.has("roles") else None
        if roles is not None and not roles <= {Role.OPERATOR, Role.SUPERVISOR}:
            raise table.error("roles", "only operator and supervisor may preserve evidence")
        rules = EvidenceRules(
            roles=roles or EvidenceRules().roles,
            retention_days=table.integer("retention_days", minimum=1, maximum=3650),
            max_clip_seconds=table.integer("max_clip_seconds", minimum=1, maximum=86_400))
        table.finish()
        return rules

    def _agencies(self, table: _Table) -> dict[str, str]:
        agencies: dict[str, str] = {}
        if not table:
            raise table.error(None, "must list at least one agency")
        for agency in table:
            if agency.startswith(DISTRICT_AGENCY_PREFIX):
                raise table.error(
                    agency, "district control centres are implicit agencies; do not list them"
                )
            if not _NAME_RE.fullmatch(agency):
                raise table.error(agency, "is not a valid agency id (a-z, 0-9 and '-')")
            agencies[agency] = table.text(agency)
        table.finish()
        return agencies

    def _standing(self, table: _Table) -> StandingAccess:
        standing = StandingAccess(
            session=timedelta(minutes=table.integer("session_minutes", minimum=1)),
            purpose=table.text("purpose"),
            legal_basis=table.text("legal_basis"),
        )
        table.finish()
        return standing

    def _break_glass(self, table: _Table) -> BreakGlassRules:
        ceiling = BREAK_GLASS_LIMIT // timedelta(minutes=1)
        rules = BreakGlassRules(
            max_duration=timedelta(
                minutes=table.integer("max_minutes", minimum=1, maximum=ceiling)
            ),
            min_reason_chars=table.integer("min_reason_chars", minimum=1),
            purpose_prefix=table.text("purpose_prefix"),
            legal_basis=table.text("legal_basis"),
        )
        table.finish()
        return rules

    def _services(self, table: _Table, agencies: Mapping[str, str]) -> dict[str, ServicePolicy]:
        if not table:
            raise table.error(None, "must define at least one service")
        services: dict[str, ServicePolicy] = {}
        borrowers: dict[str, _Table] = {}
        owner_of_type: dict[str, str] = {}
        for service_id in table:
            if not _NAME_RE.fullmatch(service_id):
                raise table.error(service_id, "is not a valid service id (a-z, 0-9 and '-')")
            entry = table.table(service_id)
            services[service_id] = self._service(service_id, entry, agencies, owner_of_type)
            if services[service_id].incident_types_from is not None:
                borrowers[service_id] = entry
            entry.finish()
        table.finish()
        self._lend_incident_types(services, borrowers)
        self._check_hand_offs(table, services)
        return services

    def _service(self, service_id: str, entry: _Table, agencies: Mapping[str, str],
                 owner_of_type: dict[str, str]) -> ServicePolicy:
        """One ``[services.<id>]`` table; records the types it serves in ``owner_of_type``."""
        listed_agencies = entry.names("agencies")
        for index, agency in enumerate(listed_agencies):
            if agency not in agencies:
                raise PolicyError(
                    self._source,
                    f"{entry.key_path('agencies')}[{index}]: unknown agency {agency!r} "
                    f"(not listed in [agencies])",
                )
        borrowed_from, own_types = self._incident_types(service_id, entry, owner_of_type)
        default_radius = entry.positive_number("default_radius_m")
        max_radius = entry.positive_number("max_radius_m")
        if max_radius < default_radius:
            raise entry.error(
                "max_radius_m",
                f"must be at least default_radius_m ({default_radius:g}), got {max_radius:g}",
            )
        return ServicePolicy(
            service_id=service_id,
            title=entry.text("title"),
            agencies=frozenset(listed_agencies),
            incident_types=frozenset(own_types),
            incident_types_from=borrowed_from,
            default_radius_m=default_radius,
            max_radius_m=max_radius,
            time_box=timedelta(minutes=entry.integer("time_box_minutes", minimum=1)),
            facilities=entry.boolean("facilities"),
            purpose=entry.text("purpose"),
            legal_basis=entry.text("legal_basis"),
            follow_positions=entry.optional_integer("follow_positions", 1, minimum=1,
                                                    maximum=MAX_FOLLOW_POSITIONS),
            follow_minutes=entry.optional_integer("follow_minutes", 0, minimum=0,
                                                  maximum=24 * 60),
            live_cameras=entry.optional_integer("live_cameras", 9, minimum=1, maximum=16),
            areas=entry.boolean("areas") if entry.has("areas") else False,
            extendable=entry.boolean("extendable") if entry.has("extendable") else False,
            hand_off_to=entry.name("hand_off_to") if entry.has("hand_off_to") else None,
            hand_off_type=entry.name("hand_off_type") if entry.has("hand_off_type") else None,
        )

    def _check_hand_offs(self, table: _Table, services: Mapping[str, ServicePolicy]) -> None:
        """A hand-off names an existing service and a type that service serves."""
        for service in services.values():
            if (service.hand_off_to is None) != (service.hand_off_type is None):
                raise table.error(service.service_id,
                                  "give both hand_off_to and hand_off_type, or neither")
            if service.hand_off_to is None:
                continue
            target = services.get(service.hand_off_to)
            if target is None or target.service_id == service.service_id:
                raise table.error(service.service_id,
                                  f"hand_off_to: unknown service {service.hand_off_to!r}")
            if service.hand_off_type not in target.incident_types:
                raise table.error(service.service_id,
                                  f"hand_off_type: {service.hand_off_type!r} is not served by "
                                  f"{target.service_id!r}")

    def _incident_types(self, service_id: str, entry: _Table,
                        owner_of_type: dict[str, str]) -> tuple[str | None, list[str]]:
        """The service it borrows its types from, or its own types (each served only once)."""
        if entry.has("incident_types") and entry.has("incident_types_from"):
            raise entry.error(
                "incident_types_from", "give either incident_types or incident_types_from"
            )
        if entry.has("incident_types_from"):
            return entry.name("incident_types_from"), []
        own_types = entry.names("incident_types")
        for index, incident_type in enumerate(own_types):
            if incident_type in owner_of_type:
                raise PolicyError(
                    self._source,
                    f"{entry.key_path('incident_types')}[{index}]: incident type "
                    f"{incident_type!r} is already served by service "
                    f"{owner_of_type[incident_type]!r}",
                )
            owner_of_type[incident_type] = service_id
        return None, own_types

    @staticmethod
    def _lend_incident_types(services: dict[str, ServicePolicy],
                             borrowers: Mapping[str, _Table]) -> None:
        """A borrowing service serves the types its lender lists itself (no chains, no loops)."""
        for service_id, entry in borrowers.items():
            lender_id = services[service_id].incident_types_from
            lender = services.get(lender_id or "")
            if lender is None or lender.incident_types_from is not None:
                problem = (
                    "a service cannot borrow its own incident types"
                    if lender_id == service_id
                    else f"unknown service {lender_id!r}"
                    if lender is None
                    else f"service {lender_id!r} does not list its own incident_types"
                )
                raise entry.error("incident_types_from", problem)
            services[service_id] = replace(
                services[service_id], incident_types=lender.incident_types
            )

    def _refused(self, table: _Table, services: Mapping[str, ServicePolicy]) -> dict[str, str]:
        refused: dict[str, str] = {}
        for incident_type in table:
            if not _NAME_RE.fullmatch(incident_type):
                raise table.error(incident_type, "is not a valid incident type id")
            for service in services.values():
                if incident_type in service.incident_types:
                    raise table.error(
                        incident_type,
                        f"is both refused and served by service {service.service_id!r}",
                    )
            refused[incident_type] = table.text(incident_type)
        table.finish()
        return refused


def _toml_type(value: object) -> str:
    match value:
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a float"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "a table"
        case datetime():
            return "a datetime"
        case _:
            return f"a {type(value).__name__}"
