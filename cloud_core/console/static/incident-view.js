// One incident: its cameras, nearest first, opening at once as a grid of live tiles; for 119 the
// parking and hazardous facilities nearby; closing it ends every grant it backs.

import { ApiError, SignedOut } from './api.js';
import { CameraTile } from './camera-tile.js';
import { CityMap } from './city-map.js';
import { DispatchPanel } from './dispatch-panel.js';
import { h } from './dom.js';
import { IncidentMoves } from './incident-moves.js';
import { agencyLabel, cameraStatusText, distanceM, duration, kstDateTime, kstTime, metres, serviceBadge, typeLabel } from './format.js';

export const MAX_TILES = 9;
const CLIP_SECONDS = [10, 30, 60, 300, 600];

export class IncidentView {
  constructor(app, incidentId, report = null) {
    this.app = app;
    this.incidentId = incidentId;
    this.report = report;
    this.tiles = [];
    this.timers = [];
    this.grid = h('div', { class: 'tile-grid' });
    this.head = h('header', { class: 'incident-head' }, h('h1', {}, 'Incident ', h('span', { class: 'mono' }, incidentId)));
    this.map = new CityMap({
      compact: true, label: 'the incident area',
      onCamera: (camera) => { this.addCamera(camera.camera_id); return true; },
    });
    this.cameraList = h('ol', { class: 'camera-list' });
    this.facilities = h('section', { class: 'card facilities', hidden: true });
    this.moves = new IncidentMoves(app, incidentId, (report) => this._moved(report));
    this.addInput = h('input', { type: 'text', name: 'camera_id', placeholder: 'camera id, e.g. gangnam-007', spellcheck: false });
    this.addError = h('p', { class: 'form-error', hidden: true });
    this.dispatch = null;           // the 112 room's dispatch card, once the incident is known
    this.clipSeconds = h('select', { name: 'clip_seconds', 'aria-label': 'evidence clip length' },
      CLIP_SECONDS.map((s) => h('option', { value: s, selected: s === 60 }, s < 60 ? `${s} s` : `${s / 60} min`)));
    this.evidenceCard = h('section', { class: 'card evidence-card', hidden: true },
      h('h2', {}, 'Evidence'),
      h('label', {}, 'Clip length ', this.clipSeconds),
      h('p', { class: 'muted small' }, '"Preserve" on a live tile records the camera\'s own video at its district\'s agent, hashed and on the audit record.'));
    this.el = h('section', { class: 'incident-view' },
      this.head,
      h('div', { class: 'incident-body' },
        this.gridPane = h('div', { class: 'grid-pane' }, this.grid),
        h('aside', { class: 'incident-side' },
          h('section', { class: 'card map-card' }, this.map.el),
          h('section', { class: 'card' }, h('h2', {}, 'Cameras in the radius'), this.cameraList,
            h('form', { class: 'add-camera', onsubmit: (event) => { event.preventDefault(); this.addCamera(this.addInput.value.trim()); } },
              this.addInput, h('button', { type: 'submit' }, 'Open camera')),
            this.addError),
          this.dispatchSlot = h('div', { class: 'dispatch-slot' }),
          this.evidenceCard,
          this.moves.el,
          this.facilities)));
  }

  async start() {
    let report = this.report;
    if (!report) {
      try {
        report = await this.app.api.get(`/api/incidents/${encodeURIComponent(this.incidentId)}`);
      } catch (err) {
        if (err instanceof SignedOut) return;
        this.head.replaceChildren(h('h1', {}, 'Incident not available'),
          h('p', { class: 'form-error' }, err.message), h('a', { href: '#/map' }, '← back to the map'));
        return;
      }
    }
    if (this.destroyed) return;
    this.report = report;
    this._prepareTools(report.incident);
    this._openTiles(report);        // first: the golden time starts with the first tile
    this.dispatch?.start();
    this._render();
    this.map.fitCircle(report.incident.lat, report.incident.lon, report.incident.radius_m);
    this.timers.push(setInterval(() => this._tick(), 1000));
    this._resize = new ResizeObserver(() => this._layout());
    this._resize.observe(this.gridPane);
  }

  /** A video wall: the column count that makes n tiles (16:10 plus their bar) largest. */
  _layout() {
    const n = this.tiles.length;
    const width = this.gridPane?.clientWidth - 24;
    const height = this.gridPane?.clientHeight - 24;
    if (!n || !(width > 0) || !(height > 0)) return;
    const gap = 10;
    const bar = 46 + (this.tiles.some((t) => t.actions.length) ? 40 : 0);
    let best = { cols: 1, w: 0 };
    for (let cols = 1; cols <= n; cols += 1) {
      const rows = Math.ceil(n / cols);
      const byWidth = (width - gap * (cols - 1)) / cols;
      const byHeight = (((height - gap * (rows - 1)) / rows) - bar) * 1.6;
      const w = Math.min(byWidth, byHeight);
      if (w > best.w) best = { cols, w };
    }
    const w = Math.max(best.w, 280);
    this.grid.style.gridTemplateColumns = `repeat(${best.cols}, ${Math.floor(w)}px)`;
  }

  destroy() {
    this.destroyed = true;
    for (const timer of this.timers) clearInterval(timer);
    for (const tile of this.tiles) tile.close({ quiet: true });
    this.map.destroy();
    this._resize?.disconnect();
  }

  // --- tiles ----------------------------------------------------------------------------------

  _tile(camera, rank, note = '') {
    const tile = new CameraTile({
      api: this.app.api, pool: this.app.pool, camera, rank, note,
      incidentId: this.incidentId,
      onFirstFrame: (t, at) => this.app.firstFrame(t, at, this.incidentId),
      onRemoved: (removed) => {
        this.tiles = this.tiles.filter((t) => t !== removed);
        this._layout();
      },
    });
    this.tiles.push(tile);
    this._equip(tile);
    this.grid.append(tile.el);
    this._layout();
    return tile;
  }

  // --- what an operator can do from a tile: dispatch (the 112 room), evidence ----------------

  _prepareTools(incident) {
    const me = this.app.me;
    const admitted = incident.open && me.views_video && incident.agencies.includes(me.agency);
    this.mayPreserve = admitted && me.preserves_evidence;
    this.evidenceCard.hidden = !this.mayPreserve;
    if (admitted && me.dispatches && !this.dispatch) {
      this.dispatch = new DispatchPanel(this.app, this.incidentId, () => {
        for (const tile of this.tiles) this._equipDispatch(tile);
        this._layout();
      });
      this.dispatchSlot.replaceChildren(this.dispatch.el);
    }
  }

  _equip(tile) {
    if (this.mayPreserve) {
      tile.addAction({ label: 'Preserve', cls: 'preserve', title: 'preserve an evidence clip of this camera',
        run: (t) => this._preserve(t) });
    }
    if (this.dispatch?.active) this._equipDispatch(tile);
  }

  _equipDispatch(tile) {
    if (tile.actions.some((b) => b.classList.contains('push-still'))) return;
    tile.addAction({ label: 'Still → officers', cls: 'push-still', title: 'push a still of this camera to the dispatched officers',
      run: (t) => this.dispatch.pushStill(t.camera.camera_id) });
    tile.addAction({ label: 'Hand off', cls: 'hand-off', title: 'let the dispatched officers open this camera live',
      run: (t) => this.dispatch.handOff(t.camera.camera_id) });
  }

  async _preserve(tile) {
    const seconds = Number(this.clipSeconds.value);
    const answer = await this.app.api.post(`/api/incidents/${encodeURIComponent(this.incidentId)}/evidence`,
      { camera_id: tile.camera.camera_id, max_seconds: seconds });
    tile.el.dataset.clip = answer.clip.clip_id;
    return `clip ${answer.clip.clip_id} ${answer.clip.state} (up to ${seconds} s), kept at the district`;
  }

  _openTiles(report) {
    if (!report.incident.open) return;
    const cameras = report.cameras.slice(0, Math.min(MAX_TILES, report.incident.live_cameras ?? MAX_TILES));
    const tiles = cameras.map((camera, i) => this._tile(camera, i + 1));
    if (!tiles.length) {
      this.grid.append(h('p', { class: 'empty-grid' },
        `No camera within ${metres(report.incident.radius_m)} of the incident.`));
      return;
    }
    // The nearest camera first, alone: the others start once its offer has been answered, so
    // they do not compete with it for the agent and the core.
    const [first, ...rest] = tiles;
    first.open().finally(() => { for (const tile of rest) tile.open(); });
  }

  addCamera(cameraId) {
    this.addError.hidden = true;
    if (!cameraId) return;
    const existing = this.tiles.find((t) => t.camera.camera_id === cameraId);
    if (existing) {
      if (!['opening', 'connecting', 'live', 'stalled'].includes(existing.state)) existing.open();
      existing.el.scrollIntoView({ block: 'nearest' });
      return;
    }
    const incident = this.report.incident;
    const ranked = this.report.cameras.find((c) => c.camera_id === cameraId);
    const known = ranked;
    const camera = known
      ? { ...known, distance_m: known.distance_m ?? distanceM(incident.lat, incident.lon, known.lat, known.lon) }
      : { camera_id: cameraId, name: cameraId, distance_m: null };
    const rank = ranked ? this.report.cameras.indexOf(ranked) + 1 : null;
    const note = ranked ? '' : 'outside the ranked list';
    this.grid.querySelector('.empty-grid')?.remove();
    this._tile(camera, rank, note).open();
    this.addInput.value = '';
  }

  // --- the incident ---------------------------------------------------------------------------

  _render() {
    const { incident, cameras, facilities } = this.report;
    const badge = serviceBadge(incident.service);
    this.timeBox = h('span', { class: 'mono' });
    this.closeForm = h('form', { class: 'close-form', hidden: true, onsubmit: (event) => this._close(event) },
      this.closeReason = h('input', { type: 'text', name: 'reason', required: true, placeholder: 'why, e.g. suspect arrested', maxlength: 200 }),
      h('button', { type: 'submit', class: 'danger' }, 'Confirm close'),
      h('button', { type: 'button', onclick: () => { this.closeForm.hidden = true; this.closeButton.hidden = false; } }, 'Cancel'));
    this.closeButton = h('button', { type: 'button', class: 'danger', onclick: () => {
      this.closeButton.hidden = true;
      this.closeForm.hidden = false;
      this.closeReason.focus();
    } }, 'Close incident');
    this.closeError = h('p', { class: 'form-error', hidden: true });
    this.stateBadge = h('span', { class: 'state-badge' });
    const mayClose = this.app.me.views_video && incident.agencies.includes(this.app.me.agency);
    this.head.className = `incident-head ${badge.cls}`;
    this.head.replaceChildren(
      h('div', { class: 'incident-title' },
        h('span', { class: `badge big ${badge.cls}` }, badge.text),
        h('div', {},
          h('h1', {}, typeLabel(incident.incident_type), this.stateBadge),
          h('p', { class: 'subtitle' }, incident.service_title, ' · ',
            h('span', { class: 'mono' }, incident.incident_id),
            incident.external_ref ? [' · ref ', h('span', { class: 'mono' }, incident.external_ref)] : ''))),
      h('dl', { class: 'incident-facts' },
        h('div', {}, h('dt', {}, 'Place'), h('dd', { class: 'mono' }, `${incident.lat.toFixed(5)}, ${incident.lon.toFixed(5)}`)),
        h('div', {}, h('dt', {}, 'Radius'), h('dd', {}, metres(incident.radius_m))),
        h('div', {}, h('dt', {}, 'Opened'), h('dd', {}, `${kstTime(incident.opened_at)} KST`)),
        h('div', {}, h('dt', {}, 'Time box'), h('dd', {}, this.timeBox)),
        h('div', {}, h('dt', {}, 'Cameras'), h('dd', {}, `${cameras.length} in radius`)),
        h('div', {}, h('dt', {}, 'Agencies'), h('dd', {}, incident.agencies.map(agencyLabel).join(', '))),
        h('div', {}, h('dt', {}, 'Reported by'), h('dd', {}, incident.reported_by))),
      h('div', { class: 'incident-actions' },
        mayClose ? [this.closeButton, this.closeForm] : '',
        h('a', { href: '#/map', class: 'button-link' }, '← Map'),
        this.closeError),
      h('p', { class: 'legal' }, h('b', {}, 'Purpose '), incident.purpose, h('b', {}, ' · Legal basis '), incident.legal_basis));

    this._cameraList();

    if (facilities.length) {
      const group = (kind, title) => {
        const items = facilities.filter((f) => f.kind === kind);
        return h('div', { class: `facility-group ${kind}` }, h('h3', {}, title, ' ', h('span', { class: 'count' }, items.length)),
          h('ul', {}, items.length ? items.map((f) => h('li', {},
            h('span', { class: 'name' }, f.name), h('span', { class: 'dist mono' }, metres(f.distance_m)),
            h('small', {}, f.detail))) : h('li', { class: 'empty' }, 'none nearby')));
      };
      this.facilities.replaceChildren(h('h2', {}, 'Nearby facilities'),
        group('hazardous', 'Hazardous'), group('parking', 'Parking'));
      this.facilities.hidden = false;
    }

    this.map.setDistricts(this.app.districts);
    this.map.setIncidents([incident]);
    this.map.setFacilities(facilities);
    this.map.setCameras(cameras);   // the ranked cameras: the city's others are not this view's
    this.map.setFocus(incident, cameras.map((c) => c.camera_id));
    this.moves.render(incident);
    this._tick();
  }

  /** The grant followed a move: show the new ranking and open the cameras now in reach. */
  _moved(report) {
    this.report = report;
    this._render();
    const open = new Set(this.tiles.map((t) => t.camera.camera_id));
    for (const camera of report.cameras.slice(0, MAX_TILES)) {
      if (!open.has(camera.camera_id)) this.addCamera(camera.camera_id);
    }
  }

  /** Pushed by the core: this incident moved (the subject walked on) or changed. */
  onIncidentEvent(event) {
    if (event.incident?.incident_id !== this.incidentId || !this.report) return;
    if (event.kind === 'dispatch') {
      if (event.dispatch) this.dispatch?.render(event.dispatch);
      return;
    }
    this.app.api.get(`/api/incidents/${encodeURIComponent(this.incidentId)}`)
      .then((report) => this._moved(report), () => {});
  }

  _tick() {
    const incident = this.report?.incident;
    if (!incident || !this.timeBox) return;
    const now = Date.now() + this.app.clockSkewMs;
    if (!incident.open) {
      this.timeBox.textContent = incident.closed_at ? `closed ${kstTime(incident.closed_at)}` : 'ended';
      this.stateBadge.textContent = incident.closed_at ? `CLOSED — ${incident.close_reason}` : 'TIME BOX ENDED';
      this.stateBadge.className = 'state-badge closed';
      if (this.closeButton) this.closeButton.hidden = true;
      if (this.closeForm) this.closeForm.hidden = true;
      return;
    }
    const left = Date.parse(incident.expires_at) - now;
    this.timeBox.textContent = `${duration(left)} left (until ${kstDateTime(incident.expires_at)} KST)`;
    this.stateBadge.textContent = 'OPEN';
    this.stateBadge.className = 'state-badge open';
  }

  async _close(event) {
    event.preventDefault();
    this.closeError.hidden = true;
    try {
      const result = await this.app.api.post(`/api/incidents/${encodeURIComponent(this.incidentId)}/close`,
        { reason: this.closeReason.value.trim() });
      this.report.incident = result.incident;
      this.map.setIncidents([result.incident]);
      this._tick();
      for (const tile of this.tiles) tile.refresh();   // the grants ended: say so now
    } catch (err) {
      if (err instanceof SignedOut) return;
      this.closeError.textContent = err instanceof ApiError && err.status === 403
        ? `permission denied: ${err.message}` : err.message;
      this.closeError.hidden = false;
    }
  }

  /** The ranked cameras in the radius, each with what is known of its state. */
  _cameraList() {
    const { cameras } = this.report;
    this.cameraList.replaceChildren(...(cameras.length ? cameras.map((camera, i) => h('li', {
      class: `camera-item status-${camera.status}`, dataset: { camera: camera.camera_id },
      onclick: () => this.addCamera(camera.camera_id),
    }, h('span', { class: 'rank' }, i + 1), h('span', { class: 'name' }, camera.name),
    h('span', { class: 'dist mono' }, metres(camera.distance_m)),
    h('span', { class: 'status' }, camera.status === 'unknown' ? cameraStatusText(camera) : camera.status)))
      : [h('li', { class: 'empty' }, 'None')]));
  }

  /** Pushed changes of watched cameras (the console's CameraStore). */
  onCameras(changed) {
    if (!this.report) return;
    const byId = new Map(changed.map((c) => [c.camera_id, c]));
    this.report.cameras = this.report.cameras.map((c) => (byId.has(c.camera_id) ? { ...c, status: byId.get(c.camera_id).status } : c));
    this.map.setCameras(this.report.cameras);
    this._cameraList();
    for (const tile of this.tiles) {
      const camera = byId.get(tile.camera.camera_id);
      if (camera) tile.cameraStatus({ ...tile.camera, ...camera });
    }
  }

  onOverview(overview) {
    if (!this.report) return;
    this.app.cameras?.watch(this.report.cameras.map((c) => c.camera_id));
    const incident = this.report.incident;
    const listed = overview.incidents.find((i) => i.incident_id === incident.incident_id);
    if (incident.open && !listed) {
      // Closed elsewhere, or its time box ran out: fetch why.
      this.app.api.get(`/api/incidents/${encodeURIComponent(this.incidentId)}`).then((report) => {
        this.report.incident = report.incident;
        this.map.setIncidents([report.incident]);
        this._tick();
      }, () => {});
    }
  }
}
