// The overview: the city's cameras on the map, open incidents, and reporting a new one.

import { ApiError, SignedOut } from './api.js';
import { CameraTile } from './camera-tile.js';
import { CityMap } from './city-map.js';
import { h } from './dom.js';
import { cameraStatusText, kstTime, metres, serviceBadge, typeLabel } from './format.js';

export class MapView {
  constructor(app) {
    this.app = app;
    this.tiles = [];
    this.map = new CityMap({
      label: 'map of the districts, their cameras and open incidents',
      onPick: (lat, lon) => this._pick(lat, lon),
      onCamera: (camera) => this._camera(camera),
      canZoom: () => !this._armed(),
      onIncident: (id) => {
        if (this._armed()) return false;   // placing an incident: the click is a place
        app.navigate(`#/incident/${id}`);
        return true;
      },
    });
    this.incidentList = h('ul', { class: 'incident-list' });
    this.counts = h('div', { class: 'camera-counts' });
    this.cameraCard = h('section', { class: 'card camera-card', hidden: true });
    this.carded = null;          // the camera the card shows: watched, so the card follows it
    this.unknownNotice = h('div', { class: 'map-notice unknown', role: 'status', hidden: true });
    this.watching = h('div', { class: 'tile-grid watching' });
    this.watchCard = h('section', { class: 'card', hidden: true }, h('h2', {}, 'Watching'), this.watching);
    this.el = h('section', { class: 'map-view' },
      h('div', { class: 'map-pane' }, this.map.el, this._legend(), this.unknownNotice,
        this.hint = h('div', { class: 'map-hint' }, 'Choose an incident type, then click the map where it happened.')),
      h('aside', { class: 'side-pane' },
        this._reportCard(),
        this.cameraCard,
        this.watchCard,
        h('section', { class: 'card' },
          h('h2', {}, 'Open incidents ', this.incidentCount = h('span', { class: 'count' }, '0')),
          this.incidentList),
        h('section', { class: 'card' }, h('h2', {}, 'Cameras'), this.counts)));
  }

  start() {
    const app = this.app;
    this.map.setDistricts(app.districts);
    const points = app.districts.flatMap((d) => d.outline.flat());
    this.map.fit(points.length ? points : [[37.5665, 126.978]], points.length ? 1400 : 15000);
    if (app.cameras) {
      this.map.setClusterSource(app.cameras);
      this._off = [
        app.cameras.on('counts', (counts) => this._counts(counts)),
      ];
      if (app.cameras.counts) this._counts(app.cameras.counts);
    }
    if (app.overview) this.onOverview(app.overview);
    this.hint.hidden = !this.form;
  }

  destroy() {
    for (const off of this._off ?? []) off();
    for (const tile of this.tiles) tile.close({ quiet: true });
    this.map.destroy();
  }

  _legend() {
    const item = (cls, text) => h('span', { class: `legend-item ${cls}` }, h('i'), text);
    return h('div', { class: 'legend' },
      item('online', 'online'), item('in-use', 'in use by an incident'), item('offline', 'offline'),
      item('unknown', 'status unknown'), item('incident', 'incident radius'));
  }

  // --- reporting ------------------------------------------------------------------------------

  _reportCard() {
    const services = this.app.me.reports;
    if (!services.length) {
      this.form = null;
      return h('section', { class: 'card report-card muted-card' }, h('h2', {}, 'Report incident'),
        h('p', { class: 'muted' }, !this.app.me.views_video
          ? 'Your role does not report incidents or view video.'
          : this.app.me.agency.startsWith('district:')
            ? 'Your centre watches its own district\'s cameras: click one on the map. Incidents are reported by 112, 119 and the other agencies.'
            : 'Your agency reports no incident types. Incidents your agency is admitted to appear below.'));
    }
    this.typeSelect = h('select', { name: 'incident_type', required: true, onchange: () => this._formChanged() },
      h('option', { value: '' }, '— choose the incident type —'),
      // A named service (112 emergency dispatch) serves another's types: its own group, its id sent.
      services.map((service) => h('optgroup', { label: service.title, dataset: { service: service.service } },
        service.incident_types.map((type) => h('option', {
          value: type, dataset: { radius: service.default_radius_m, max: service.max_radius_m, service: service.service },
        }, typeLabel(type))))));
    this.latInput = h('input', { name: 'lat', type: 'number', step: 'any', min: -90, max: 90, placeholder: 'latitude', required: true, oninput: () => this._formChanged(true) });
    this.lonInput = h('input', { name: 'lon', type: 'number', step: 'any', min: -180, max: 180, placeholder: 'longitude', required: true, oninput: () => this._formChanged(true) });
    this.radiusInput = h('input', { name: 'radius_m', type: 'number', min: 1, step: 1, oninput: () => this._formChanged() });
    this.refInput = h('input', { name: 'external_ref', type: 'text', placeholder: 'e.g. 112-2026-0001', maxlength: 64 });
    this.reportButton = h('button', { class: 'primary report-button', type: 'submit', disabled: true }, 'Report incident');
    this.formError = h('p', { class: 'form-error', role: 'alert', hidden: true });
    this.form = h('form', { class: 'card report-card', onsubmit: (event) => this._report(event) },
      h('h2', {}, 'Report incident'),
      h('label', {}, 'Type', this.typeSelect),
      h('div', { class: 'row' }, h('label', {}, 'Latitude', this.latInput), h('label', {}, 'Longitude', this.lonInput)),
      h('div', { class: 'row' },
        h('label', {}, 'Radius (m)', this.radiusInput),
        h('label', {}, 'Call reference', this.refInput)),
      this.reportButton, this.formError);
    return this.form;
  }

  _armed() {
    return Boolean(this.form && this.typeSelect.value);
  }

  _pick(lat, lon) {
    if (!this._armed()) {
      this.cameraCard.hidden = true;
      this.carded = null;
      this._watchCameras();
      return;
    }
    this.latInput.value = lat;
    this.lonInput.value = lon;
    this._formChanged(true);
  }

  _formChanged(moved = false) {
    const option = this.typeSelect.selectedOptions[0];
    const defaultRadius = Number(option?.dataset.radius) || 0;
    this.radiusInput.placeholder = defaultRadius ? `default ${defaultRadius}` : '';
    if (option?.dataset.max) this.radiusInput.max = option.dataset.max;
    const lat = parseFloat(this.latInput.value);
    const lon = parseFloat(this.lonInput.value);
    const placed = Number.isFinite(lat) && Number.isFinite(lon);
    const radius = parseFloat(this.radiusInput.value) || defaultRadius;
    this.map.setPick(placed ? { lat, lon, radius } : null);
    this.reportButton.disabled = !(this.typeSelect.value && placed);
    this.el.classList.toggle('armed', this._armed());
    if (moved) this.formError.hidden = true;
  }

  async _report(event) {
    event.preventDefault();
    const app = this.app;
    app.metrics.reportPressedAt = performance.now();
    app.metrics.firstTileFrameAt = null;
    this.reportButton.disabled = true;
    this.reportButton.textContent = 'Reporting…';
    this.formError.hidden = true;
    const body = {
      incident_type: this.typeSelect.value,
      lat: parseFloat(this.latInput.value),
      lon: parseFloat(this.lonInput.value),
    };
    if (this.radiusInput.value) body.radius_m = parseFloat(this.radiusInput.value);
    if (this.refInput.value.trim()) body.external_ref = this.refInput.value.trim();
    const service = this.typeSelect.selectedOptions[0]?.dataset.service;
    if (service) body.service = service;
    try {
      const report = await app.api.post('/api/incidents', body);
      app.metrics.reportAnsweredAt = performance.now();
      app.showIncident(report);
    } catch (err) {
      if (err instanceof SignedOut) return;
      this.formError.textContent = err instanceof ApiError && err.status === 403
        ? `permission denied: ${err.message}` : err.message;
      this.formError.hidden = false;
      this.reportButton.disabled = false;
      this.reportButton.textContent = 'Report incident';
    }
  }

  // --- cameras --------------------------------------------------------------------------------

  _camera(camera) {
    if (this._armed()) return false;   // placing an incident: a click on a camera is a place
    this._card(camera);
    this.carded = camera;
    this._watchCameras();
    return true;
  }

  _card(camera) {
    const viewers = camera.viewers ?? this.tiles.filter((t) => t.camera.camera_id === camera.camera_id).length;
    this.cameraCard.replaceChildren(
      h('h2', {}, camera.name),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Camera'), h('dd', { class: 'mono' }, camera.camera_id),
        h('dt', {}, 'District'), h('dd', {}, camera.district_id),
        h('dt', {}, 'Status'), h('dd', { class: `status-${camera.status}` }, cameraStatusText(camera)),
        h('dt', {}, 'Viewers'), h('dd', {}, viewers),
        h('dt', {}, 'Position'), h('dd', { class: 'mono' }, `${camera.lat.toFixed(5)}, ${camera.lon.toFixed(5)}`)),
      this.app.me.views_video
        ? h('button', { type: 'button', onclick: () => this._watch(camera) }, 'Watch (standing access)')
        : '',
      h('p', { class: 'muted small' }, 'Agencies watch through an incident; a district centre may watch its own cameras.'));
    this.cameraCard.hidden = false;
  }

  /** The worker pushes changes of the cameras in a tile or on the card. */
  _watchCameras() {
    const ids = this.tiles.map((t) => t.camera.camera_id);
    if (this.carded) ids.push(this.carded.camera_id);
    this.app.cameras?.watch(ids);
  }

  _watch(camera) {
    if (this.tiles.some((t) => t.camera.camera_id === camera.camera_id)) return;
    const tile = new CameraTile({
      api: this.app.api, pool: this.app.pool, camera: { ...camera, distance_m: null },
      onRemoved: (removed) => {
        this.tiles = this.tiles.filter((t) => t !== removed);
        this.watchCard.hidden = !this.tiles.length;
        this._watchCameras();
      },
    });
    this.tiles.push(tile);
    this._watchCameras();
    this.watching.append(tile.el);
    this.watchCard.hidden = false;
    tile.open();
  }

  // --- live data ------------------------------------------------------------------------------

  onOverview(overview) {
    this.map.setAgents(overview.agents);
    this.map.setIncidents(overview.incidents);
    const incidents = overview.incidents.filter((i) => i.open);
    this.incidentCount.textContent = incidents.length;
    this.incidentList.replaceChildren(...(incidents.length ? incidents.map((incident) => {
      const badge = serviceBadge(incident.service);
      return h('li', {
        class: `incident-item ${badge.cls}`, dataset: { incident: incident.incident_id },
        onclick: () => this.app.navigate(`#/incident/${incident.incident_id}`),
      },
      h('span', { class: `badge ${badge.cls}` }, badge.text),
      h('span', { class: 'incident-item-main' },
        h('b', {}, typeLabel(incident.incident_type)),
        h('small', { class: 'mono' }, incident.incident_id)),
      h('span', { class: 'incident-item-meta' },
        `${kstTime(incident.opened_at)} · ${metres(incident.radius_m)} · ${incident.reported_by}`));
    }) : [h('li', { class: 'empty' }, 'No open incident.')]));
  }

  /** Cameras by state, city-wide and per district (from the CameraStore's worker). */
  _counts({ online, offline, unknown = 0, districts }) {
    const perDistrict = (d) => `${d.online}/${d.total} online` + (d.unknown ? ` · ${d.unknown} unknown` : '');
    this.counts.replaceChildren(
      h('div', { class: 'count-row' },
        h('span', { class: 'count-cell online', dataset: { state: 'online' } }, h('b', {}, online), 'online'),
        h('span', { class: 'count-cell offline', dataset: { state: 'offline' } }, h('b', {}, offline), 'offline'),
        h('span', { class: 'count-cell unknown', dataset: { state: 'unknown' } }, h('b', {}, unknown), 'unknown')),
      h('ul', { class: 'district-counts' }, Object.entries(districts).map(([id, d]) => h('li', { dataset: { district: id } },
        h('span', {}, id), h('span', { class: 'mono' }, perDistrict(d))))));
    // Not a city of broken cameras: the core does not know. Said in words, over the map.
    this.unknownNotice.hidden = !unknown;
    this.unknownNotice.textContent = unknown === online + offline + unknown
      ? `Camera status unknown: the core lost its broker. The ${unknown} cameras are not known to be offline.`
      : `${unknown} cameras' status unknown: the core lost its broker.`;
  }

  /** Pushed changes of the cameras this view watches. */
  onCameras(changed) {
    const carded = this.carded && changed.find((c) => c.camera_id === this.carded.camera_id);
    if (carded && !this.cameraCard.hidden) {
      this.carded = { ...this.carded, ...carded };
      this._card(this.carded);
    }
    for (const tile of this.tiles) {
      const camera = changed.find((c) => c.camera_id === tile.camera.camera_id);
      if (camera) tile.cameraStatus({ ...tile.camera, ...camera });
    }
  }

  /** Client coordinates of (lat, lon) on the map: for tests and the benchmark. */
  screenPoint(lat, lon) {
    return this.map.screenPoint(lat, lon);
  }
}
