"""WebRTC settings shared by the edge agent and viewers.

Two things decide where media may flow: the addresses a peer advertises as ICE host candidates,
and the STUN/TURN servers it asks. Both are configuration. A demo or test on one machine advertises
loopback only and asks no STUN server, so no packet leaves the machine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCRtpCodecCapability, RTCRtpReceiver

_original_get_host_addresses = aioice.ice.get_host_addresses
_advertised: tuple[str, ...] = ()


@dataclass(frozen=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class WebRtcSettings:
    """``advertise``: host-candidate addresses; empty means every interface (aioice's default)."""

    advertise: tuple[str, ...] = ()
    ice_servers: tuple[IceServer, ...] = ()

    def __post_init__(self) -> None:
        for address in self.advertise:
            try:
                ipaddress.ip_address(address)
            except ValueError as exc:
                raise ValueError(f"advertised ICE address {address!r} is not an IP address") from exc
        for server in self.ice_servers:
            for url in server.urls:
                if not url.startswith(("stun:", "turn:", "turns:")):
                    raise ValueError(f"ICE server URL {url!r} must start with stun:, turn: or turns:")

    @classmethod
    def loopback(cls) -> WebRtcSettings:
        return cls(advertise=("127.0.0.1",))

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> WebRtcSettings:
        """Build from a TOML table: ``advertise = [..]``, ``[[webrtc.ice_servers]] urls = [..]``."""
        unknown = set(data) - {"advertise", "ice_servers"}
        if unknown:
            raise ValueError(f"unknown webrtc setting(s): {', '.join(sorted(unknown))}")
        advertise = data.get("advertise", [])
        if not isinstance(advertise, list) or not all(isinstance(a, str) for a in advertise):
            raise ValueError("webrtc.advertise must be a list of IP address strings")
        servers = []
        for entry in data.get("ice_servers", []):
            if not isinstance(entry, dict) or "urls" not in entry:
                raise ValueError("each webrtc.ice_servers entry needs urls = [...]")
            urls = entry["urls"]
            servers.append(IceServer(
                urls=tuple([urls] if isinstance(urls, str) else urls),
                username=entry.get("username"),
                credential=entry.get("credential"),
            ))
        return cls(advertise=tuple(advertise), ice_servers=tuple(servers))

    def rtc_configuration(self) -> RTCConfiguration:
        """An aiortc configuration that asks exactly the configured servers (none: no STUN)."""
        apply_advertised_addresses(self.advertise)
        return RTCConfiguration(iceServers=[
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in self.ice_servers
        ])


def apply_advertised_addresses(addresses: Sequence[str]) -> None:
    """Make aioice offer only ``addresses`` as host candidates (process-wide).

    aioice never offers loopback on its own, and offers every interface otherwise; it has no
    per-connection setting, so this replaces its module-level lookup. Agent and viewer processes
    use one setting each; peers in one process (tests) must agree on it.
    """
    global _advertised
    chosen = tuple(addresses)
    if chosen == _advertised:
        return
    _advertised = chosen
    if not chosen:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        picked = []
        for address in chosen:
            version = ipaddress.ip_address(address).version
            if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
                picked.append(address)
        return picked

    aioice.ice.get_host_addresses = get_host_addresses


def h264_codecs(*, with_rtx: bool = True) -> list[RTCRtpCodecCapability]:
    """aiortc's H.264 codecs (and RTX for retransmission), for ``setCodecPreferences``.

    Sender and receiver capabilities are the same in aiortc; H.264 is what cameras send and what
    the agent passes through, so every peer of ours prefers it.
    """
    capabilities = RTCRtpReceiver.getCapabilities("video")
    if capabilities is None:
        raise RuntimeError("aiortc reports no video capabilities")
    wanted = ("video/h264", "video/rtx") if with_rtx else ("video/h264",)
    return [codec for codec in capabilities.codecs if codec.mimeType.lower() in wanted]
