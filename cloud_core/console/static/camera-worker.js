// The city's cameras, kept off the page's main thread: a module worker that fetches the snapshot
// once (GET /api/cameras), follows the pushed changes (GET /api/cameras/events, Server-Sent
// Events read from a fetch() body so the bearer token goes in a header, never in a URL), keeps
// a supercluster index, and answers the map's viewport with the clusters to draw.
//
// Page → worker: {type: 'start', token} | {type: 'view', bbox: [w, s, e, n], zoom}
//                | {type: 'watch', ids} | {type: 'stop'}
// Worker → page: {type: 'ready', version, count} | {type: 'clusters', items, zoom}
//                | {type: 'counts', online, offline, districts} | {type: 'agents', agents}
//                | {type: 'cameras', cameras} (watched cameras that changed)
//                | {type: 'signedout', message} | {type: 'error', message}

import Supercluster from './vendor/supercluster.js';

const REBUILD_MS = 250;         // changes arriving together are indexed together
const RETRY_MS = [500, 1000, 2000, 5000, 10000];

let token = null;
let stopped = false;
let version = 0;
let cameras = [];               // [{camera_id, district_id, name, lat, lon, status}]
let byId = new Map();
let index = null;
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

async function loadSnapshot() {
  const snapshot = await (await get('/api/cameras', 'application/json')).json();
  const at = Object.fromEntries(snapshot.fields.map((name, i) => [name, i]));
  cameras = snapshot.cameras.map((row) => ({
    camera_id: row[at.camera_id], district_id: row[at.district_id], name: row[at.name],
    lat: row[at.lat], lon: row[at.lon], status: row[at.state],
  }));
  byId = new Map(cameras.map((camera, i) => [camera.camera_id, i]));
  version = snapshot.version;
  rebuild();
  postMessage({ type: 'ready', version, count: cameras.length });
}

function applyChanges(changes) {
  const changed = [];
  for (const [camera_id, district_id, name, lat, lon, status] of changes) {
    const camera = { camera_id, district_id, name, lat, lon, status };
    const i = byId.get(camera_id);
    if (i === undefined) {
      byId.set(camera_id, cameras.length);
      cameras.push(camera);
    } else {
      cameras[i] = camera;
    }
    if (watched.has(camera_id)) changed.push(camera);
  }
  if (changed.length) postMessage({ type: 'cameras', cameras: changed });
  rebuildTimer ??= setTimeout(() => { rebuildTimer = null; rebuild(); }, REBUILD_MS);
}

function rebuild() {
  index = new Supercluster({
    radius: 44, maxZoom: 16,
    map: (p) => ({ online: p.online, offline: 1 - p.online }),
    reduce: (sum, p) => { sum.online += p.online; sum.offline += p.offline; },
  });
  index.load(cameras.map((camera, i) => ({
    type: 'Feature', geometry: { type: 'Point', coordinates: [camera.lon, camera.lat] },
    properties: { i, online: camera.status === 'online' ? 1 : 0 },
  })));
  postCounts();
  postClusters();
}

function postCounts() {
  const districts = {};
  let online = 0;
  for (const camera of cameras) {
    const d = (districts[camera.district_id] ??= { online: 0, total: 0 });
    d.total += 1;
    if (camera.status === 'online') { d.online += 1; online += 1; }
  }
  postMessage({ type: 'counts', online, offline: cameras.length - online, districts });
}

function postClusters() {
  if (!index || !view) return;
  const items = index.getClusters(view.bbox, view.zoom).map((feature) => {
    const [lon, lat] = feature.geometry.coordinates;
    const p = feature.properties;
    if (p.cluster) {
      return { lat, lon, count: p.point_count, online: p.online, offline: p.offline, id: p.cluster_id };
    }
    const camera = cameras[p.i];
    return { lat, lon, count: 1, online: p.online, offline: 1 - p.online, camera };
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
