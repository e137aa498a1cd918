// The city's cameras, kept off the page's main thread: a module worker that fetches the snapshot
// once (GET /api/cameras), follows the pushed changes (GET /api/cameras/events, Server-Sent
// Events read from a fetch() body so the bearer token goes in a header, never in a URL), keeps
// a supercluster index, and answers the map's viewport with the clusters to draw.
//
// Page → worker: {type: 'start', token} | {type: 'view', bbox: [w, s, e, n], zoom}
//                | {type: 'watch', ids} | {type: 'stop'}
// Worker → page: {type: 'ready', version, count} | {type: 'clusters', items, zoom}
//                | {type: 'counts', online, offline, unknown, districts} | {type: 'agents', agents}
//                | {type: 'cameras', cameras} (watched cameras that changed)
//                | {type: 'signedout', message} | {type: 'error', message}

import Supercluster from './vendor/supercluster.js';

// A camera's effective state, one byte per camera. ``unknown``: the core cannot reach its
// broker, so no status it holds is current (it is not the camera's fault; it is not offline).
const OFFLINE = 0;
const ONLINE = 1;
const UNKNOWN = 2;
const STATE_CODES = { offline: OFFLINE, online: ONLINE, unknown: UNKNOWN };
const STATE_NAMES = ['offline', 'online', 'unknown'];
const stateCode = (name) => STATE_CODES[name] ?? OFFLINE;

const REBUILD_MS = 250;         // changes arriving together are indexed together
const RETRY_MS = [500, 1000, 2000, 5000, 10000];
const MAX_ZOOM = 16;
const FIRST_ZOOM = 11;          // the zoom of a first view not yet asked for (the city fits ~10)

let token = null;
let stopped = false;
let version = 0;
// The cameras, column by column (68,000 of them: no object per camera until one is drawn or
// watched), and where each camera_id is.
let ids = [];
let districtIds = [];
let names = [];
let lats = [];
let lons = [];
let states = new Uint8Array(1024);
let byId = new Map();
let index = null;
let indexMaxZoom = 0;
let view = null;
let watched = new Set();
let rebuildTimer = null;
let abort = null;

class SignedOut extends Error {}

async function get(path, accept) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${token}`, Accept: accept }, cache: 'no-store',
    signal: abort.signal,
  });
  if (response.status === 401) throw new SignedOut((await response.json().catch(() => ({}))).message ?? 'signed out');
  if (!response.ok) throw new Error(`${path}: ${response.status} ${response.statusText}`);
  return response;
}

function camera(i) {
  return {
    camera_id: ids[i], district_id: districtIds[i], name: names[i], lat: lats[i], lon: lons[i],
    status: STATE_NAMES[states[i]],
    reason: states[i] === UNKNOWN ? 'broker_unreachable' : '',
  };
}

function clusterer(maxZoom) {
  // A point's properties are its column index; a cluster's are how many of its cameras are
  // online and how many unknown (the rest are offline).
  return new Supercluster({
    radius: 44, maxZoom,
    map: (i) => ({ online: states[i] === ONLINE ? 1 : 0, unknown: states[i] === UNKNOWN ? 1 : 0 }),
    reduce: (sum, p) => { sum.online += p.online; sum.unknown += p.unknown; },
  });
}

// V8 compiles supercluster's loops only once they are hot: clustering a few thousand made-up
// points while the snapshot is on its way halves the first real clustering.
function warmUp() {
  const points = [];
  for (let k = 0; k < 4000; k++) {
    points.push({ geometry: { coordinates: [126.8 + ((k * 7919) % 3000) / 10000, 37.45 + ((k * 104729) % 2000) / 10000] }, properties: 0 });
  }
  clusterer(MAX_ZOOM).load(points);
}

async function loadSnapshot() {
  const started = performance.now();
  const pending = get('/api/cameras', 'application/json');
  if (!index) warmUp();
  const response = await pending;
  const answered = performance.now();
  const snapshot = await response.json();
  const parsed = performance.now();
  const at = Object.fromEntries(snapshot.fields.map((name, i) => [name, i]));
  const rows = snapshot.cameras;
  const n = rows.length;
  ids = new Array(n);
  districtIds = new Array(n);
  names = new Array(n);
  lats = new Array(n);
  lons = new Array(n);
  states = new Uint8Array(Math.max(n, 1024));
  byId = new Map();
  for (let i = 0; i < n; i++) {
    const row = rows[i];
    ids[i] = row[at.camera_id];
    districtIds[i] = row[at.district_id];
    names[i] = row[at.name];
    lats[i] = row[at.lat];
    lons[i] = row[at.lon];
    states[i] = stateCode(row[at.state]);
    byId.set(ids[i], i);
  }
  version = snapshot.version;
  // First the clusters of the view (cheap: clustered at that zoom only), then every zoom.
  const firstZoom = Math.min(MAX_ZOOM, view?.zoom ?? FIRST_ZOOM);
  rebuild(firstZoom);
  const first = performance.now();
  postMessage({ type: 'ready', version, count: ids.length,
    timings: { answer_ms: answered - started, body_ms: parsed - answered, first_ms: first - parsed } });
  if (firstZoom < MAX_ZOOM) {
    await new Promise((resolve) => setTimeout(resolve, 0));   // a view asked meanwhile is answered
    rebuild(MAX_ZOOM);
  }
}

function applyChanges(changes) {
  const changed = [];
  for (const [camera_id, district_id, name, lat, lon, status] of changes) {
    let i = byId.get(camera_id);
    if (i === undefined) {
      i = ids.length;
      byId.set(camera_id, i);
      if (i >= states.length) {
        const grown = new Uint8Array(states.length * 2);
        grown.set(states);
        states = grown;
      }
    }
    ids[i] = camera_id;
    districtIds[i] = district_id;
    names[i] = name;
    lats[i] = lat;
    lons[i] = lon;
    states[i] = stateCode(status);
    if (watched.has(camera_id)) changed.push(camera(i));
  }
  if (changed.length) postMessage({ type: 'cameras', cameras: changed });
  rebuildTimer ??= setTimeout(() => { rebuildTimer = null; rebuild(MAX_ZOOM); }, REBUILD_MS);
}

function rebuild(maxZoom) {
  const n = ids.length;
  const points = new Array(n);
  for (let i = 0; i < n; i++) points[i] = { geometry: { coordinates: [lons[i], lats[i]] }, properties: i };
  index = clusterer(maxZoom);
  index.load(points);
  indexMaxZoom = maxZoom;
  postCounts();
  postClusters();
}

function postCounts() {
  const districts = {};
  const totals = [0, 0, 0];
  for (let i = 0; i < ids.length; i++) {
    const d = (districts[districtIds[i]] ??= { online: 0, offline: 0, unknown: 0, total: 0 });
    const name = STATE_NAMES[states[i]];
    d[name] += 1;
    d.total += 1;
    totals[states[i]] += 1;
  }
  postMessage({ type: 'counts', online: totals[ONLINE], offline: totals[OFFLINE], unknown: totals[UNKNOWN], districts });
}

function postClusters() {
  // Above the index's zoom every camera in view would come back one by one: wait for every zoom.
  if (!index || !view || (view.zoom > indexMaxZoom && indexMaxZoom < MAX_ZOOM)) return;
  const items = index.getClusters(view.bbox, view.zoom).map((feature) => {
    const [lon, lat] = feature.geometry.coordinates;
    const p = feature.properties;
    if (typeof p === 'number') {
      const state = states[p];
      return { lat, lon, count: 1, online: state === ONLINE ? 1 : 0, offline: state === OFFLINE ? 1 : 0,
        unknown: state === UNKNOWN ? 1 : 0, camera: camera(p) };
    }
    return { lat, lon, count: p.point_count, online: p.online, unknown: p.unknown,
      offline: p.point_count - p.online - p.unknown, id: p.cluster_id };
  });
  postMessage({ type: 'clusters', items, zoom: view.zoom });
}

// --- Server-Sent Events over fetch() ----------------------------------------------------------

async function follow() {
  const response = await get(`/api/cameras/events?since=${version}`, 'text/event-stream');
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = { name: 'message', data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === '') {
        if (event.data.length && await dispatch(event.name, event.data.join('\n')) === 'reset') return;
        event = { name: 'message', data: [] };
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? '' : line.slice(colon + 1);
        if (text.startsWith(' ')) text = text.slice(1);
        if (field === 'event') event.name = text;
        else if (field === 'data') event.data.push(text);
      }
    }
  }
}

async function dispatch(name, data) {
  const body = JSON.parse(data);
  if (name === 'cameras') {
    applyChanges(body.changes);
    version = Math.max(version, body.version);
  } else if (name === 'agents') {
    postMessage({ type: 'agents', agents: body.agents });
  } else if (name === 'reset') {
    await loadSnapshot();
    return 'reset';
  }
  return null;
}

async function run() {
  let failures = 0;
  while (!stopped) {
    try {
      if (!index) await loadSnapshot();
      await follow();
      failures = 0;
    } catch (err) {
      if (stopped) return;
      if (err instanceof SignedOut) {
        postMessage({ type: 'signedout', message: err.message });
        return;
      }
      postMessage({ type: 'error', message: `camera updates: ${err.message}` });
      const wait = RETRY_MS[Math.min(failures, RETRY_MS.length - 1)];
      failures += 1;
      await new Promise((resolve) => setTimeout(resolve, wait * (0.8 + 0.4 * Math.random())));
    }
  }
}

onmessage = ({ data }) => {
  if (data.type === 'start') {
    token = data.token;
    abort = new AbortController();
    run();
  } else if (data.type === 'view') {
    view = { bbox: data.bbox, zoom: data.zoom };
    postClusters();
  } else if (data.type === 'watch') {
    watched = new Set(data.ids);
  } else if (data.type === 'stop') {
    stopped = true;
    abort?.abort();
    close();
  }
};
