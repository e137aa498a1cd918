"""The two pilot districts: Gangnam-gu and Mapo-gu, about twenty cameras each.

Coordinates are real places in each district (stations, crossings, parks, offices), so spatial
queries and incident radii behave as they would in Seoul.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PilotCamera:
    camera_id: str
    name: str
    lat: float
    lon: float


@dataclass(frozen=True)
class PilotDistrict:
    district_id: str
    name: str
    cameras: tuple[PilotCamera, ...]


def _district(district_id: str, name: str, places: list[tuple[str, float, float]]) -> PilotDistrict:
    return PilotDistrict(district_id, name, tuple(
        PilotCamera(f"{district_id}-{i:03d}", place, lat, lon)
        for i, (place, lat, lon) in enumerate(places, start=1)
    ))


GANGNAM = _district("gangnam", "Gangnam-gu", [
    ("Gangnam Station exit 11", 37.49795, 127.02760),
    ("Sinsa Station crossing", 37.51638, 127.02012),
    ("Garosu-gil north", 37.52089, 127.02300),
    ("Apgujeong Rodeo", 37.52726, 127.04053),
    ("Cheongdam crossing", 37.51932, 127.05365),
    ("COEX north gate", 37.51195, 127.05906),
    ("Samseong Station", 37.50881, 127.06316),
    ("Seolleung Station", 37.50448, 127.04894),
    ("Yeoksam Station", 37.50071, 127.03650),
    ("Nonhyeon Station", 37.51103, 127.02162),
    ("Hak-dong crossing", 37.51428, 127.03171),
    ("Gangnam-gu Office", 37.51724, 127.04731),
    ("Dogok Station", 37.49090, 127.05558),
    ("Daechi Station", 37.49459, 127.06343),
    ("Guryong Station", 37.48694, 127.05943),
    ("Gaepo-dong Station", 37.48907, 127.06621),
    ("Daemosan entrance", 37.49119, 127.07269),
    ("Irwon Station", 37.48364, 127.08464),
    ("Suseo Station", 37.48738, 127.10171),
    ("Segok-dong", 37.46505, 127.10397),
])

MAPO = _district("mapo", "Mapo-gu", [
    ("Hongik Univ. Station exit 9", 37.55723, 126.92453),
    ("Hapjeong Station", 37.54958, 126.91394),
    ("Mangwon Station", 37.55601, 126.91008),
    ("Sangsu Station", 37.54773, 126.92294),
    ("Gongdeok Station", 37.54434, 126.95155),
    ("Mapo Station", 37.53952, 126.94593),
    ("Ahyeon Station", 37.55731, 126.95602),
    ("Daeheung Station", 37.54764, 126.94221),
    ("Gwangheungchang Station", 37.54741, 126.93175),
    ("Digital Media City Station", 37.57700, 126.89905),
    ("World Cup Stadium north", 37.56827, 126.89717),
    ("Mangwon Hangang Park", 37.55503, 126.89509),
    ("Yeonnam-dong park", 37.56262, 126.92375),
    ("Seogyo-dong crossing", 37.55303, 126.91906),
    ("Mapo-gu Office", 37.56628, 126.90193),
    ("Seongsan-dong", 37.56602, 126.91101),
    ("Sangam-dong", 37.57902, 126.88903),
    ("Dohwa-dong", 37.54004, 126.94902),
    ("Yonggang-dong", 37.53802, 126.94404),
    ("Hyeonseok-dong", 37.54903, 126.93302),
])

PILOT_DISTRICTS: tuple[PilotDistrict, ...] = (GANGNAM, MAPO)
