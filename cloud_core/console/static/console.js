// The Safety Net console: sign-in, the views (map, incident, audit), and what they share.
//
// The operator's token lives in sessionStorage (this tab only) and goes with every call. The
// core re-authenticates every call, so a token disabled on the core ends the console session at
// the next call (the map polls every 2 s): "signed out: token disabled".

import { Api, SignedOut } from './api.js';
import { AuditPage } from './audit-page.js';
import { CameraStore } from './camera-store.js';
import { OfferPool } from './camera-tile.js';
import { IceServers } from './ice-servers.js';
import { h } from './dom.js';
import { agencyLabel, kstTime } from './format.js';
import { IncidentView } from './incident-view.js';
import { MapView } from './map-view.js';
import { EventStream } from './event-stream.js';
import { ProtectionInbox } from './protection-inbox.js';
import { GoldenTimePage } from './golden-time-page.js';

const TOKEN_KEY = 'safetynet.token';
const OVERVIEW_MS = 2000;

class Console {
  constructor() {
    this.api = null;
    this.me = null;
    this.pool = null;
    this.ice = null;
    this.view = null;
    this.route = '';
    this.overview = null;
    this.districts = [];
    this.clockSkewMs = 0;
    this.pendingReport = null;
    this.timers = [];
    // Golden time, measured here in the browser: "report incident" pressed → first frame shown.
    this.metrics = { reportPressedAt: null, reportAnsweredAt: null, firstTileFrameAt: null, firstFrameAt: null };
    this.$ = (id) => document.getElementById(id);
  }

  boot() {
    this.$('signin-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.signIn(this.$('signin-token').value.trim());
    });
    this.$('signin-file').addEventListener('change', async (event) => {
      const file = event.target.files[0];
      if (file) this.$('signin-token').value = (await file.text()).trim();
    });
    this.$('signout').addEventListener('click', () => this.signOut('signed out'));
    window.addEventListener('hashchange', () => this._routeFromHash());
    window.addEventListener('pagehide', () => {
      for (const tile of this.view?.tiles ?? []) tile.abandon();
    });
    setInterval(() => { this.$('clock').textContent = `${kstTime(Date.now() + this.clockSkewMs)} KST`; }, 500);
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) this.signIn(token);
    else this._showSignIn('');
  }

  // --- signing in and out ---------------------------------------------------------------------

  _showSignIn(notice) {
    this.$('app').hidden = true;
    this.$('signin').hidden = false;
    const noticeEl = this.$('signin-notice');
    noticeEl.textContent = notice;
    noticeEl.hidden = !notice;
    this.$('signin-token').value = '';
    this.$('signin-token').focus();
  }

  async signIn(token) {
    if (!token) return;
    performance.clearMarks('safetynet:map-drawn');
    performance.clearMarks('safetynet:map-interactive');
    performance.mark('safetynet:signin');
    const api = new Api(token, null);
    // The city's cameras: a snapshot once, then pushed changes, kept in a worker. Started with
    // the sign-in itself: the snapshot is the longest fetch, and a refused token stops it.
    const cameras = new CameraStore(token, {
      onSignedOut: () => this.signOut('signed out: token disabled'),
      onError: (message) => this.banner(message),
    });
    let me;
    try {
      me = await api.get('/api/me');
    } catch (err) {
      cameras.close();
      sessionStorage.removeItem(TOKEN_KEY);
      this._showSignIn(err instanceof SignedOut ? `token not accepted: ${err.message}` : err.message);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    api.onSignedOut = () => this.signOut('signed out: token disabled');
    this.api = api;
    this.me = me;
    this.cameras = cameras;
    this.cameras.on('cameras', ({ cameras }) => this.view?.onCameras?.(cameras));
    if (me.views_video) {
      // TURN credentials first (behind NAT the offers need relay candidates), then the pool.
      this.ice = new IceServers(api);
      this.pool = new OfferPool(4, this.ice);
      const { pool } = this;
      this.ice.start().then(() => pool.start());
    }
    this.$('operator').replaceChildren(h('b', {}, me.name),
      h('span', { title: me.agency_title }, agencyLabel(me.agency)), h('span', { class: 'role' }, me.role));
    this.$('nav-audit').hidden = !me.audits;
    document.body.dataset.agency = me.agency.split(':')[0];
    this.$('signin').hidden = true;
    this.$('app').hidden = false;
    try {
      this.districts = (await api.get('/api/districts')).districts;
      await this.refresh();
    } catch (err) {
      if (err instanceof SignedOut) return;
      this.banner(err.message);
    }
    this.timers.push(setInterval(() => this.refresh(), OVERVIEW_MS));
    this._startEvents(token, me);
    if (!location.hash || location.hash === '#/') location.hash = me.audits ? '#/audit' : '#/map';
    this._routeFromHash();
  }

  signOut(notice) {
    if (!this.api) return;
    const api = this.api;
    this.api = null;
    api.onSignedOut = null;
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    this.events?.close();
    this.events = null;
    this.inbox?.el.remove();
    this.inbox = null;
    this.view?.destroy();
    this.view = null;
    this.route = '';
    this.pool?.close();
    this.pool = null;
    this.ice?.close();
    this.ice = null;
    this.cameras?.close();
    this.cameras = null;
    this.me = null;
    sessionStorage.removeItem(TOKEN_KEY);
    this.$('view').replaceChildren();
    history.replaceState(null, '', location.pathname);
    this._showSignIn(notice);
  }

  // --- shared state ---------------------------------------------------------------------------

  async refresh() {
    if (!this.api) return;
    try {
      this.overview = await this.api.get('/api/overview');
    } catch (err) {
      if (!(err instanceof SignedOut)) this.banner(err.message);
      return;
    }
    this.banner('');
    this.clockSkewMs = Date.parse(this.overview.now) - Date.now();
    this.$('agents').replaceChildren(...Object.entries(this.overview.agents).map(([district, online]) =>
      h('span', { class: `agent ${online ? 'up' : 'down'}`, title: online ? 'agent online' : 'agent offline' }, district)));
    this.view?.onOverview?.(this.overview);
  }

  /** Pushed incident events: the SOS inbox (protection centres) and the open incident view. */
  _startEvents(token, me) {
    if (me.agency === 'vulnerable-support') {
      this.inbox = new ProtectionInbox(this);
      this.inbox.seed(this.overview?.incidents ?? []);
      this.$('banner').after(this.inbox.el);   // in the flow: it never covers a view
    }
    this.events = new EventStream(token, (event) => {
      this.inbox?.onIncidentEvent(event);
      this.view?.onIncidentEvent?.(event);
    });
    this.events.start();
  }

  banner(text) {
    const el = this.$('banner');
    el.textContent = text;
    el.hidden = !text;
  }

  firstFrame(tile, at, incidentId) {
    if (this.metrics.firstFrameAt === null) this.metrics.firstFrameAt = at;
    if (tile.rank === 1 && this.metrics.firstTileFrameAt === null
        && this.metrics.incidentId === incidentId) {
      this.metrics.firstTileFrameAt = at;
    }
  }

  // --- views ----------------------------------------------------------------------------------

  showIncident(report) {
    this.pendingReport = report;
    this.metrics.incidentId = report.incident.incident_id;
    this.navigate(`#/incident/${report.incident.incident_id}`);
  }

  navigate(hash) {
    if (location.hash !== hash) history.pushState(null, '', hash);
    this._routeFromHash();
  }

  _routeFromHash() {
    if (!this.api) return;
    const hash = location.hash || '#/map';
    if (hash === this.route) return;
    this.route = hash;
    this.view?.destroy();
    const incident = /^#\/incident\/(.+)$/.exec(hash);
    if (incident) {
      const id = decodeURIComponent(incident[1]);
      const report = this.pendingReport?.incident.incident_id === id ? this.pendingReport : null;
      this.pendingReport = null;
      this.view = new IncidentView(this, id, report);
    } else if (hash === '#/audit' && this.me.audits) {
      this.view = new AuditPage(this);
    } else if (hash === '#/golden-time') {
      this.view = new GoldenTimePage(this);
    } else {
      this.view = new MapView(this);
    }
    for (const link of document.querySelectorAll('[data-nav]')) {
      link.classList.toggle('active', hash.startsWith(`#/${link.dataset.nav}`));
    }
    this.$('view').replaceChildren(this.view.el);
    this.view.start();
  }
}

const app = new Console();
// For tests and the golden-time benchmark: read-only views of what the console shows.
window.safetynet = {
  app,
  metrics: app.metrics,
  tiles: () => (app.view?.tiles ?? []).map((tile) => tile.snapshot()),
  screenPoint: (lat, lon) => app.view?.screenPoint?.(lat, lon) ?? null,
  cameras: () => ({ ready: app.cameras?.ready ?? null, counts: app.cameras?.counts ?? null }),
  clusters: () => app.view?.map?.clusters ?? [],
  clusterFrames: () => app.view?.map?.framesDrawn ?? 0,
  // Set to 'relay' before sign-in (or open the page with ?ice-transport=relay): relay-only ICE.
  iceTransportPolicy: null,
};
app.boot();
