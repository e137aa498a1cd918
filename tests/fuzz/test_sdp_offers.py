"""SDP offers, fuzzed: through the core's ``check_offer`` and, behind a valid grant, through the
agent's offer handling (aiortc parses them for real).

``check_offer`` raises only ``InvalidOffer``; the agent answers with an SDP answer or refuses
with BAD_OFFER, never an internal error, and a refused offer leaves no session and no viewer on
the camera's feed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_core.sessions import InvalidOffer, check_offer
from protos.safetynet.v1 import mqtt_pb2
from tests.fuzz.harness import NASTY_TEXT, counted, fuzz_settings, mutated_lines
from tests.fuzz.rig import CAMERAS, Rig, hosted_rig, valid_offer_request

SDP_VALUES = st.one_of(
    NASTY_TEXT,
    st.sampled_from(["video 0 UDP/TLS/RTP/SAVPF 96", "video 9 RTP/AVP 0", "audio 9 UDP/TLS/RTP/SAVPF 111",
                     "rtpmap:96 VP8/90000", "rtpmap:99 H264/90000", "setup:active", "setup:holdconn",
                     "fingerprint:sha-256 00", "fingerprint:md5 AA:BB", "ice-ufrag:", "ice-pwd:x",
                     "candidate:1 1 udp 1 127.0.0.1 0 typ host", "candidate:x", "mid:", "group:BUNDLE 7",
                     "sendonly", "inactive", "rtcp-mux", "fmtp:99 profile-level-id=zz",
                     "IN IP6 ::1", "IN IP4 999.1.1.1", "m=video 9 UDP/TLS/RTP/SAVPF 96",
                     "ssrc:-1 cname:x", "extmap:99999 urn:x", "v=1", "o=- x x IN IP4 0.0.0.0"]),
)


def offers(seed: str) -> st.SearchStrategy[str]:
    """The real viewer's offer, mutated line by line (CRLF kept), or any text at all."""
    crlf = mutated_lines([seed.replace("\r\n", "\n")], SDP_VALUES).map(
        lambda text: text.replace("\n", "\r\n"))
    return st.one_of(crlf, crlf.map(lambda text: text[: len(text) // 2]),
                     st.text(max_size=300).map(lambda t: "v=0\r\nm=video " + t), st.text(max_size=200))


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with hosted_rig() as rig:
        yield rig


def check_core_offer(offer: str) -> None:
    counted("sdp_check_offer")
    try:
        check_offer(offer)
    except InvalidOffer as exc:
        assert str(exc).startswith("the SDP offer")


def check_agent_offer(rig: Rig, offer: str) -> None:
    counted("sdp_agent")
    agent, feed = rig.agent, rig.agent.feeds[CAMERAS[1]]
    sessions, viewers = set(agent.sessions), feed.viewers
    request = valid_offer_request(rig, offer, CAMERAS[1])
    response = rig.run(agent.answer(request))
    if response.WhichOneof("result") == "error":
        assert response.error.code == mqtt_pb2.SIGNAL_ERROR_BAD_OFFER, response.error
        assert response.error.message.startswith("unusable SDP offer")
        assert set(agent.sessions) == sessions and feed.viewers == viewers
        counted("sdp_agent_refused")
        return
    assert response.sdp_answer.startswith("v=0")
    counted("sdp_agent_answered")
    rig.run(agent.sessions[request.offer.session_id].close("fuzz done"))
    assert set(agent.sessions) == sessions and feed.viewers == viewers


@fuzz_settings(300)
@given(st.data())
def test_check_offer_raises_only_invalid_offer(rig: Rig, data: st.DataObject) -> None:
    check_core_offer(data.draw(offers(rig.offer)))


@fuzz_settings(50)
@given(st.data())
def test_agent_answers_or_refuses_any_offer_behind_a_valid_grant(rig: Rig, data: st.DataObject) -> None:
    check_agent_offer(rig, data.draw(offers(rig.offer)))
