// How the console writes times, distances and names. Times are Korea Standard Time: the
// operators are in Seoul, whatever the browser's own time zone.

const KST = new Intl.DateTimeFormat('en-GB', {
  timeZone: 'Asia/Seoul', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
});
const KST_DATE = new Intl.DateTimeFormat('en-CA', {
  timeZone: 'Asia/Seoul', year: 'numeric', month: '2-digit', day: '2-digit',
});

export function kstTime(value) {
  if (!value) return '—';
  return KST.format(value instanceof Date ? value : new Date(value));
}

export function kstDateTime(value) {
  if (!value) return '—';
  const date = value instanceof Date ? value : new Date(value);
  return `${KST_DATE.format(date)} ${KST.format(date)}`;
}

/** 1:59:30, 4:05, 0:09 — for time left on a grant or a time box. */
export function duration(ms) {
  if (!Number.isFinite(ms)) return '—';
  const total = Math.max(0, Math.floor(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, '0');
  return hours ? `${hours}:${String(minutes).padStart(2, '0')}:${seconds}` : `${minutes}:${seconds}`;
}

export function metres(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  return value < 1000 ? `${Math.round(value)} m` : `${(value / 1000).toFixed(value < 10000 ? 2 : 1)} km`;
}

/** "traffic-accident-rescue" → "Traffic accident rescue". */
export function typeLabel(type) {
  const words = String(type || '').replaceAll('-', ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

const AGENCY_SHORT = {
  'police-112': '112 Police',
  'fire-119': '119 Fire & Rescue',
  'disaster-room': 'Disaster room',
  'vulnerable-support': 'Protection centre',
};

export function agencyLabel(agency) {
  if (AGENCY_SHORT[agency]) return AGENCY_SHORT[agency];
  if (String(agency).startsWith('district:')) return `${agency.slice(9)} district centre`;
  return agency;
}

/** The badge class and text of an incident's service. */
export function serviceBadge(service) {
  if (service.startsWith('112')) return { cls: 'svc-112', text: '112' };
  if (service.startsWith('119')) return { cls: 'svc-119', text: '119' };
  if (service.startsWith('disaster')) return { cls: 'svc-disaster', text: 'DISASTER' };
  if (service.startsWith('vulnerable')) return { cls: 'svc-protect', text: 'SOS' };
  return { cls: 'svc-other', text: service };
}

/**
 * What is known of a camera's state, in the operator's words. ``unknown`` is not offline: the
 * core lost its broker, so it holds no current status for any camera.
 */
export function cameraStatusText(camera) {
  if (camera.status === 'unknown') return 'status unknown (core lost its broker)';
  if (camera.status !== 'online') {
    return `offline${camera.reason ? ` (${camera.reason.replaceAll('_', ' ')})` : ''}`;
  }
  return camera.in_use ? 'online · in use by an incident' : 'online';
}

const EARTH_RADIUS_M = 6371008.8;

/** Great-circle distance in metres (display only: the core decides what is inside a radius). */
export function distanceM(lat1, lon1, lat2, lon2) {
  const rad = Math.PI / 180;
  const dp = (lat2 - lat1) * rad;
  const dl = (lon2 - lon1) * rad;
  const a = Math.sin(dp / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dl / 2) ** 2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(a)));
}
