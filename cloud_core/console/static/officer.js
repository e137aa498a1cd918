// The field officer's phone page: the incidents the 112 room assigned them to, the stills and
// camera hand-offs it pushes (server-sent, as they arrive), the suspect's trail, and a handed-off
// camera live in one tap. Unassignment or closing the incident takes it all away.

import { Api, SignedOut } from './api.js';
import { CameraTile, OfferPool } from './camera-tile.js';
import { IceServers } from './ice-servers.js';
import { h } from './dom.js';
import { EventStream } from './event-stream.js';
import { kstTime, typeLabel } from './format.js';

const TOKEN_KEY = 'safetynet.officer.token';
const $ = (id) => document.getElementById(id);

/** The trail as a small SVG polyline (north up), the latest position as a dot. */
function trailSvg(trail) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 100 60');
  svg.setAttribute('class', 'trail');
  if (!trail.length) return svg;
  const lats = trail.map((p) => p.lat);
  const lons = trail.map((p) => p.lon);
  const span = Math.max(Math.max(...lats) - Math.min(...lats), Math.max(...lons) - Math.min(...lons), 1e-4);
  const x = (p) => 5 + ((p.lon - Math.min(...lons)) / span) * 90;
  const y = (p) => 55 - ((p.lat - Math.min(...lats)) / span) * 50;
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('points', trail.map((p) => `${x(p).toFixed(1)},${y(p).toFixed(1)}`).join(' '));
  const dot = document.createElementNS(ns, 'circle');
  const last = trail.at(-1);
  dot.setAttribute('cx', x(last).toFixed(1));
  dot.setAttribute('cy', y(last).toFixed(1));
  dot.setAttribute('r', '3');
  svg.append(line, dot);
  return svg;
}

class OfficerPage {
  constructor() {
    this.api = null;
    this.cards = new Map();   // incident id → { el, incident, pushes, shown: Map(push id → el), tiles }
    this.received = [];       // { push_id, kind, at_ms } as pushes arrived (for tests)
    this.pool = null;
    this.ice = null;
  }

  boot() {
    $('officer-signin').addEventListener('submit', (event) => {
      event.preventDefault();
      this.signIn($('officer-token').value.trim());
    });
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) this.signIn(token);
    else $('officer-signin').hidden = false;
  }

  async signIn(token) {
    const api = new Api(token, () => this.signOut('signed out: token disabled'));
    let me;
    try {
      me = await api.get('/api/me');
      this.api = api;
      sessionStorage.setItem(TOKEN_KEY, token);
      $('officer-name').textContent = `${me.name} · ${me.role}`;
      $('officer-signin').hidden = true;
      $('officer').hidden = false;
      this.ice = new IceServers(api);
      this.pool = new OfferPool(1, this.ice);
      const { pool } = this;
      this.ice.start().then(() => pool.start());
      this.events = new EventStream(token, (event) => this.onEvent(event));
      this.events.start();
      const mine = await api.get('/api/dispatch/mine');
      for (const item of mine.incidents) this.show(item.incident, item.dispatch);
    } catch (err) {
      this.signOut(err instanceof SignedOut ? `token not accepted: ${err.message}` : err.message);
    }
  }

  signOut(notice) {
    this.events?.close();
    this.ice?.close();
    this.ice = null;
    for (const id of [...this.cards.keys()]) this.drop(id);
    sessionStorage.removeItem(TOKEN_KEY);
    $('officer').hidden = true;
    $('officer-signin').hidden = false;
    $('officer-notice').textContent = notice;
    $('officer-notice').hidden = !notice;
  }

  onEvent(event) {
    $('officer-live').textContent = 'live';
    if (event.kind === 'unassigned') { this.drop(event.incident_id); return; }
    if (!event.incident) return;
    const card = this.cards.get(event.incident.incident_id);
    if (!card && !event.dispatch) return;
    this.show(event.incident, event.dispatch ?? null);
  }

  show(incident, dispatch) {
    let card = this.cards.get(incident.incident_id);
    if (!card) {
      card = { incident, shown: new Map(), tiles: [], pushes: h('ol', { class: 'pushes' }),
        head: h('header', {}), trail: h('div', { class: 'trail-box' }) };
      card.el = h('section', { class: 'card officer-incident', dataset: { incident: incident.incident_id } },
        card.head, card.trail, card.pushes);
      this.cards.set(incident.incident_id, card);
      $('officer-incidents').querySelector('.empty')?.remove();
      $('officer-incidents').prepend(card.el);
    }
    card.incident = incident;
    card.head.replaceChildren(h('h2', {}, typeLabel(incident.incident_type), ' ',
      h('span', { class: `state-badge ${incident.open ? 'open' : 'closed'}` }, incident.open ? 'OPEN' : 'CLOSED')),
    h('p', { class: 'mono' }, `${incident.lat.toFixed(5)}, ${incident.lon.toFixed(5)} · ${incident.incident_id}`));
    card.trail.replaceChildren(trailSvg(incident.trail));
    if (!incident.open) for (const tile of card.tiles) tile.refresh();
    for (const push of dispatch?.pushes ?? []) this._push(card, push);
  }

  _push(card, push) {
    if (card.shown.has(push.push_id)) return;
    this.received.push({ push_id: push.push_id, kind: push.kind, at_ms: Date.now() });
    const item = h('li', { class: `push ${push.kind}`, dataset: { push: push.push_id } },
      h('small', {}, `${kstTime(push.at)} KST · ${push.camera_id}`));
    if (push.kind === 'still') {
      const img = h('img', { alt: `still of ${push.camera_id}`, class: 'still' });
      item.append(img);
      // Shown when decoded (a still the page cannot show must not count as shown).
      img.addEventListener('load', () => { img.dataset.loadedAt = String(Date.now()); }, { once: true });
      img.addEventListener('error', () => { img.alt = 'still unavailable'; img.dataset.failed = 'decode'; }, { once: true });
      this.api.fetch('GET', push.url).then((r) => r.blob()).then((blob) => {
        img.src = URL.createObjectURL(blob);
      }, () => { img.alt = 'still unavailable'; img.dataset.failed = 'fetch'; });
    } else {
      item.append(h('button', { type: 'button', class: 'primary watch', onclick: () => this.watch(card, push.camera_id) },
        `Watch ${push.camera_id}`));
    }
    card.shown.set(push.push_id, item);
    card.pushes.prepend(item);
  }

  watch(card, cameraId) {
    if (card.tiles.some((t) => t.camera.camera_id === cameraId)) return;
    const tile = new CameraTile({
      api: this.api, pool: this.pool, camera: { camera_id: cameraId, name: cameraId, distance_m: null },
      incidentId: card.incident.incident_id, client: 'officer',
      onRemoved: (removed) => { card.tiles = card.tiles.filter((t) => t !== removed); },
    });
    card.tiles.push(tile);
    card.el.insertBefore(tile.el, card.pushes);
    tile.open();
  }

  drop(incidentId) {
    const card = this.cards.get(incidentId);
    if (!card) return;
    for (const tile of card.tiles) tile.close({ quiet: true });
    card.el.remove();
    this.cards.delete(incidentId);
  }
}

const page = new OfficerPage();
window.officer = {
  page,
  received: () => page.received,
  tiles: () => [...page.cards.values()].flatMap((c) => c.tiles.map((t) => t.snapshot())),
};
page.boot();
