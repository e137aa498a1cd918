// The map, drawn in SVG from coordinates only: district outlines, cameras, incidents and their
// radius, facilities. No tiles, no external data: it works on a machine with no Internet.
//
// Coordinates are projected to metres around a fixed origin (equirectangular: fine at city
// scale), so an incident's radius in metres is a circle's radius as it is.
//
// At city scale (68,000 cameras) the cameras are not SVG: ``setClusterSource(store)`` draws the
// clusters a CameraStore's worker computes for the view on a canvas above the districts, and
// the wheel zooms (a click on a cluster zooms into it). ``setCameras`` stays for short lists
// (an incident's ranked cameras).
//
// A camera's state is online, offline or unknown (the core lost its broker: nobody knows). Unknown
// is never drawn as offline: a neutral grey, hatched, with a dashed rim (a camera) or a hatched
// share (a cluster), so it reads without colour too.

import { h, s } from './dom.js';
import { cameraStatusText, metres, serviceBadge, typeLabel } from './format.js';

const M_PER_DEG_LAT = 110574;
const EARTH_M = 40075016;
const CLUSTER_EXTENT = 512;     // supercluster's tile extent: its zoom is log2 of world / extent
const COLOURS = { online: '#2e9e5b', offline: '#d2453b', unknown: '#66717e', unknownHatch: '#a3adb8' };
const SCALE_STEPS = [50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000];

export class CityMap {
  /**
   * onPick(lat, lon): a click on the map itself; onCamera(camera), onIncident(incident): a
   * click on one. ``compact`` draws smaller labels (the incident view's map).
   */
  constructor({ onPick, onCamera, onIncident, canZoom = () => true, compact = false, label = 'map' } = {}) {
    this.onPick = onPick;
    this.canZoom = canZoom;     // false while a click means a place (reporting an incident)
    this.onCamera = onCamera;
    this.onIncident = onIncident;
    this.compact = compact;
    this.districts = [];
    this.cameras = [];
    this.incidents = [];
    this.facilities = [];
    this.pick = null;
    this.focus = null;           // {incident, ranks: Map(camera_id → rank)}
    this.origin = null;
    this.bounds = null;
    this.layers = {};
    this.svg = s('svg', { class: 'city-map', role: 'img', 'aria-label': label });
    for (const name of ['grid', 'districts', 'labels', 'incidents', 'facilities', 'cameras', 'pick']) {
      this.layers[name] = s('g', { class: `layer-${name}` });
      this.svg.append(this.layers[name]);
    }
    this.scaleBar = h('div', { class: 'scale-bar' }, h('span', { class: 'scale-line' }), h('span', { class: 'scale-text' }));
    this.canvas = h('canvas', { class: 'cluster-canvas', hidden: true });
    this.clusters = [];
    this._hatch = null;
    this.el = h('div', { class: 'map-frame' + (compact ? ' compact' : '') }, this.svg, this.canvas, this.scaleBar);
    this.el.addEventListener('wheel', (event) => this._wheel(event), { passive: false });
    this.el.addEventListener('pointerdown', (event) => this._dragStart(event));
    this.el.addEventListener('pointermove', (event) => this._dragMove(event));
    this.el.addEventListener('pointerup', () => { this._drag = null; });
    this.el.addEventListener('pointercancel', () => { this._drag = null; });
    this.svg.addEventListener('click', (event) => this._click(event));
    this._resize = new ResizeObserver(() => this.render());
    this._resize.observe(this.el);
  }

  destroy() {
    this._resize.disconnect();
    this._offClusters?.();
  }

  /** Draw a CameraStore's clusters for the current view (the city-scale camera layer). */
  setClusterSource(store) {
    this.store = store;
    this.canvas.hidden = false;
    this._offClusters = store.on('clusters', ({ items }) => { this.clusters = items; this._drawClusters(); });
    this._askClusters();
  }

  // --- projection ---------------------------------------------------------------------------

  _project(lat, lon) {
    const [lat0, lon0] = this.origin;
    const mPerDegLon = M_PER_DEG_LAT * Math.cos((lat0 * Math.PI) / 180);
    return [(lon - lon0) * mPerDegLon, (lat0 - lat) * M_PER_DEG_LAT];
  }

  _unproject(x, y) {
    const [lat0, lon0] = this.origin;
    const mPerDegLon = M_PER_DEG_LAT * Math.cos((lat0 * Math.PI) / 180);
    return [lat0 - y / M_PER_DEG_LAT, lon0 + x / mPerDegLon];
  }

  /** Show [[lat, lon], …] (with ``pad`` metres around); the first fit fixes the origin. */
  fit(points, pad = 600) {
    if (!points.length) return;
    const lats = points.map((p) => p[0]);
    const lons = points.map((p) => p[1]);
    const centre = [(Math.min(...lats) + Math.max(...lats)) / 2, (Math.min(...lons) + Math.max(...lons)) / 2];
    if (!this.origin) this.origin = centre;
    const xy = points.map(([lat, lon]) => this._project(lat, lon));
    const xs = xy.map((p) => p[0]);
    const ys = xy.map((p) => p[1]);
    this.bounds = {
      x: Math.min(...xs) - pad, y: Math.min(...ys) - pad,
      w: Math.max(...xs) - Math.min(...xs) + 2 * pad, h: Math.max(...ys) - Math.min(...ys) + 2 * pad,
    };
    this.render();
  }

  /** Show a circle of ``radius`` metres around (lat, lon), with some margin. */
  fitCircle(lat, lon, radius, margin = 1.45) {
    this.origin = [lat, lon];
    const r = radius * margin;
    this.bounds = { x: -r, y: -r, w: 2 * r, h: 2 * r };
    this.render();
  }

  /** Where (lat, lon) is on screen, in client pixels (for tests and pointers). */
  screenPoint(lat, lon) {
    const [x, y] = this._project(lat, lon);
    const point = this.svg.createSVGPoint();
    point.x = x;
    point.y = y;
    const screen = point.matrixTransform(this.svg.getScreenCTM());
    return { x: screen.x, y: screen.y };
  }

  // --- data ---------------------------------------------------------------------------------

  setDistricts(districts) { this.districts = districts; this.render(); }
  setAgents(agents) { this.agents = agents; this.render(); }
  setCameras(cameras) { this.cameras = cameras; this.render(); }
  setIncidents(incidents) { this.incidents = incidents; this.render(); }
  setFacilities(facilities) { this.facilities = facilities; this.render(); }
  setPick(pick) { this.pick = pick; this.render(); }
  setFocus(incident, rankedIds = []) {
    this.focus = incident ? { incident, ranks: new Map(rankedIds.map((id, i) => [id, i + 1])) } : null;
    this.render();
  }

  // --- drawing ------------------------------------------------------------------------------

  render() {
    if (!this.origin || !this.bounds) return;
    const width = this.el.clientWidth || 800;
    const height = this.el.clientHeight || 600;
    const b = this.bounds;
    const mpp = Math.max(b.w / width, b.h / height);     // metres per screen pixel
    const vw = width * mpp;
    const vh = height * mpp;
    const vx = b.x - (vw - b.w) / 2;
    const vy = b.y - (vh - b.h) / 2;
    this.view = { x: vx, y: vy, w: vw, h: vh, mpp };
    this.svg.setAttribute('viewBox', `${vx} ${vy} ${vw} ${vh}`);
    this._grid();
    this._districts();
    this._incidents();
    this._facilities();
    this._cameras();
    this._pick();
    this._scale(mpp);
    this._askClusters();
  }

  // --- clusters (canvas) ----------------------------------------------------------------------

  _askClusters() {
    if (!this.store || !this.view) return;
    const { x, y, w, h: ht, mpp } = this.view;
    const [north, west] = this._unproject(x, y);
    const [south, east] = this._unproject(x + w, y + ht);
    const zoom = Math.log2((EARTH_M * Math.cos((this.origin[0] * Math.PI) / 180)) / (CLUSTER_EXTENT * mpp));
    this.store.view([west, south, east, north], Math.max(0, Math.min(17, Math.floor(zoom))));
  }

  _drawClusters() {
    if (!this.view) return;
    const width = this.el.clientWidth || 800;
    const height = this.el.clientHeight || 600;
    const ratio = window.devicePixelRatio || 1;
    if (this.canvas.width !== width * ratio || this.canvas.height !== height * ratio) {
      this.canvas.width = width * ratio;
      this.canvas.height = height * ratio;
    }
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.font = '600 11px system-ui, sans-serif';
    const { x: vx, y: vy, mpp } = this.view;
    for (const item of this.clusters) {
      const [mx, my] = this._project(item.lat, item.lon);
      const px = (mx - vx) / mpp;
      const py = (my - vy) / mpp;
      item.px = px;
      item.py = py;
      item.r = item.count === 1 ? 4.5 : Math.min(26, 9 + 3.2 * Math.log2(item.count));
      const unknown = item.unknown ?? 0;
      ctx.beginPath();
      ctx.arc(px, py, item.r, 0, 2 * Math.PI);
      if (item.count === 1) {
        ctx.fillStyle = item.online ? COLOURS.online : unknown ? this._unknownFill(ctx) : COLOURS.offline;
      } else {
        ctx.fillStyle = unknown === item.count ? this._unknownFill(ctx) : 'rgba(46,158,91,0.85)';
      }
      ctx.fill();
      // A cluster's shares, clockwise from the top: offline (red), then unknown (hatched grey).
      if (item.count > 1 && unknown < item.count) {
        let start = -Math.PI / 2;
        for (const [share, fill] of [[item.offline / item.count, COLOURS.offline], [unknown / item.count, null]]) {
          if (share <= 0) continue;
          const end = start + 2 * Math.PI * share;
          ctx.beginPath();
          ctx.moveTo(px, py);
          ctx.arc(px, py, item.r, start, end);
          ctx.closePath();
          ctx.fillStyle = fill ?? this._unknownFill(ctx);
          ctx.fill();
          start = end;
        }
        ctx.beginPath();
        ctx.arc(px, py, item.r, 0, 2 * Math.PI);
      }
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = '#fff';
      // Unknown through and through: a dashed rim, so it reads without its colour.
      if (unknown === item.count) ctx.setLineDash([3, 2]);
      ctx.stroke();
      ctx.setLineDash([]);
      if (item.count > 1) {
        const label = item.count >= 1000 ? `${(item.count / 1000).toFixed(1)}k` : String(item.count);
        ctx.lineWidth = 3;
        ctx.strokeStyle = 'rgba(8,12,18,0.6)';
        ctx.strokeText(label, px, py);
        ctx.fillStyle = '#fff';
        ctx.fillText(label, px, py);
      }
    }
    this.drawnAt = performance.now();
    this.framesDrawn = (this.framesDrawn ?? 0) + 1;
    if (!this.interactiveMarked && this.clusters.length) {
      this.interactiveMarked = true;
      // Interactive: the first frame of clusters is on the canvas and the main thread is free
      // again to paint it and take input (the next animation frame runs).
      performance.mark('safetynet:map-drawn');
      requestAnimationFrame(() => performance.mark('safetynet:map-interactive'));
    }
  }

  /** The hatched grey of ``unknown``: a canvas pattern, made once per map. */
  _unknownFill(ctx) {
    if (!this._hatch) {
      const tile = document.createElement('canvas');
      tile.width = 6;
      tile.height = 6;
      const t = tile.getContext('2d');
      t.fillStyle = COLOURS.unknown;
      t.fillRect(0, 0, 6, 6);
      t.strokeStyle = COLOURS.unknownHatch;
      t.lineWidth = 1.5;
      t.beginPath();
      for (const offset of [-6, 0, 6]) {
        t.moveTo(offset, 6);
        t.lineTo(offset + 6, 0);
      }
      t.stroke();
      this._hatch = ctx.createPattern(tile, 'repeat');
    }
    return this._hatch;
  }

  _clusterAt(event) {
    const rect = this.canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    const y = event.clientY - rect.top;
    let best = null;
    for (const item of this.clusters) {
      const d = Math.hypot(item.px - x, item.py - y);
      if (d <= Math.max(item.r, 6) && (!best || d < best.d)) best = { item, d };
    }
    return best?.item ?? null;
  }

  _zoomAround(lat, lon, factor) {
    if (!this.bounds || !this.origin) return;
    const [cx, cy] = this._project(lat, lon);
    const b = this.bounds;
    const w = Math.max(200, b.w * factor);
    const ht = Math.max(200, b.h * factor);
    this.bounds = { x: cx - (cx - b.x) * (w / b.w), y: cy - (cy - b.y) * (ht / b.h), w, h: ht };
    this.render();
  }

  _wheel(event) {
    if (!this.origin || !this.view) return;
    event.preventDefault();
    const rect = this.el.getBoundingClientRect();
    const [lat, lon] = this._unproject(this.view.x + (event.clientX - rect.left) * this.view.mpp,
      this.view.y + (event.clientY - rect.top) * this.view.mpp);
    this._zoomAround(lat, lon, event.deltaY > 0 ? 1.25 : 0.8);
  }

  // A drag pans (only a zoomable map: not while a click means a place). Renders are coalesced
  // to one per animation frame; a drag is never also a click.
  _dragStart(event) {
    this._dragged = false;
    if (event.button !== 0 || !this.view || !this.store || !this.canZoom()) return;
    this._drag = { x: event.clientX, y: event.clientY, bounds: { ...this.bounds }, mpp: this.view.mpp, id: event.pointerId };
  }

  _dragMove(event) {
    const drag = this._drag;
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (!this._dragged && Math.hypot(dx, dy) < 4) return;
    if (!this._dragged) this.el.setPointerCapture?.(drag.id);
    this._dragged = true;
    this.bounds = { ...drag.bounds, x: drag.bounds.x - dx * drag.mpp, y: drag.bounds.y - dy * drag.mpp };
    this._frame ??= requestAnimationFrame(() => { this._frame = null; this.render(); });
  }

  _px(n) {
    return n * this.view.mpp;
  }

  _grid() {
    const { x, y, w, h: ht } = this.view;
    const step = w > 20000 ? 2000 : w > 6000 ? 1000 : w > 2500 ? 500 : 100;
    const lines = [];
    for (let gx = Math.ceil(x / step) * step; gx < x + w; gx += step) {
      lines.push(s('line', { x1: gx, y1: y, x2: gx, y2: y + ht }));
    }
    for (let gy = Math.ceil(y / step) * step; gy < y + ht; gy += step) {
      lines.push(s('line', { x1: x, y1: gy, x2: x + w, y2: gy }));
    }
    this.layers.grid.replaceChildren(...lines);
  }

  _districts() {
    const shapes = [];
    const labels = [];
    for (const district of this.districts) {
      for (const ring of district.outline) {
        const points = ring.map(([lat, lon]) => this._project(lat, lon).join(',')).join(' ');
        shapes.push(s('polygon', { points, class: 'district', 'data-district': district.district_id }));
      }
      if (!district.outline.length || this.compact) continue;
      // The name above the district's northern edge, clear of its cameras.
      const xy = district.outline.flat().map(([lat, lon]) => this._project(lat, lon));
      const cx = (Math.min(...xy.map((p) => p[0])) + Math.max(...xy.map((p) => p[0]))) / 2;
      const top = Math.min(...xy.map((p) => p[1]));
      const online = this.agents?.[district.district_id] ?? district.agent_online;
      labels.push(s('text', { x: cx, y: top - this._px(24), class: 'district-label', 'font-size': this._px(13) },
        district.name.toUpperCase()));
      labels.push(s('text', {
        x: cx, y: top - this._px(9), class: 'agent-label ' + (online ? 'up' : 'down'), 'font-size': this._px(10.5),
      }, online ? '● agent online' : '● agent offline'));
    }
    this.layers.districts.replaceChildren(...shapes);
    this.layers.labels.replaceChildren(...labels);
  }

  _incidents() {
    const items = [];
    for (const incident of this.incidents) {
      const [x, y] = this._project(incident.lat, incident.lon);
      const badge = serviceBadge(incident.service);
      const focused = this.focus?.incident.incident_id === incident.incident_id;
      const closed = !incident.open;
      const group = s('g', {
        class: `incident ${badge.cls}` + (focused ? ' focused' : '') + (closed ? ' closed' : ''),
        'data-incident': incident.incident_id,
      });
      group.append(
        s('circle', { cx: x, cy: y, r: incident.radius_m, class: 'incident-area' }),
        s('circle', { cx: x, cy: y, r: this._px(focused ? 6 : 7), class: 'incident-core' }),
        s('circle', { cx: x, cy: y, r: this._px(13), class: 'incident-pulse' }),
      );
      if (!this.compact) {
        group.append(s('text', { x, y: y - this._px(16), class: 'incident-label', 'font-size': this._px(11.5) },
          `${badge.text} ${typeLabel(incident.incident_type).toUpperCase()}`));
      }
      group.append(s('title', {}, `${typeLabel(incident.incident_type)} — ${incident.incident_id}, ${metres(incident.radius_m)} radius`));
      items.push(group);
    }
    this.layers.incidents.replaceChildren(...items);
  }

  _facilities() {
    const items = [];
    for (const facility of this.facilities) {
      const [x, y] = this._project(facility.lat, facility.lon);
      const r = this._px(7);
      const hazardous = facility.kind === 'hazardous';
      const shape = hazardous
        ? s('polygon', { points: `${x},${y - r} ${x + r},${y + r * 0.8} ${x - r},${y + r * 0.8}` })
        : s('rect', { x: x - r * 0.85, y: y - r * 0.85, width: r * 1.7, height: r * 1.7, rx: r * 0.3 });
      items.push(s('g', { class: `facility ${facility.kind}` }, shape,
        s('text', { x, y: y + r * 0.45, 'font-size': this._px(8.5) }, hazardous ? '!' : 'P'),
        s('title', {}, `${facility.name} (${facility.kind}) — ${facility.detail}`)));
    }
    this.layers.facilities.replaceChildren(...items);
  }

  _cameras() {
    const items = [];
    const focus = this.focus;
    for (const camera of this.cameras) {
      const [x, y] = this._project(camera.lat, camera.lon);
      const rank = focus?.ranks.get(camera.camera_id);
      const status = camera.status === 'unknown' ? 'unknown'
        : camera.status !== 'online' ? 'offline' : camera.in_use ? 'in-use' : 'online';
      const group = s('g', {
        class: `camera ${status}` + (focus && !rank ? ' outside' : ''),
        'data-camera': camera.camera_id,
      });
      group.append(s('circle', { cx: x, cy: y, r: this._px(rank ? 8 : 5), class: 'camera-dot' }));
      if (rank) {
        group.append(s('text', { x, y: y + this._px(3.5), class: 'camera-rank', 'font-size': this._px(9.5) }, rank));
      } else if (status === 'unknown') {
        group.append(s('text', { x, y: y + this._px(2.5), class: 'camera-unknown-mark', 'font-size': this._px(7.5) }, '?'));
      }
      if (!rank && this.compact) {
        group.append(s('text', { x: x + this._px(8), y: y + this._px(3.5), class: 'camera-name', 'font-size': this._px(9.5) },
          camera.name));
      }
      group.append(s('title', {}, `${camera.name} (${camera.camera_id}) — ${cameraStatusText({ ...camera, in_use: status === 'in-use' })}`));
      items.push(group);
    }
    this.layers.cameras.replaceChildren(...items);
  }

  _pick() {
    if (!this.pick) {
      this.layers.pick.replaceChildren();
      return;
    }
    const [x, y] = this._project(this.pick.lat, this.pick.lon);
    const arm = this._px(14);
    this.layers.pick.replaceChildren(
      this.pick.radius ? s('circle', { cx: x, cy: y, r: this.pick.radius, class: 'pick-area' }) : '',
      s('line', { x1: x - arm, y1: y, x2: x + arm, y2: y, class: 'pick-cross' }),
      s('line', { x1: x, y1: y - arm, x2: x, y2: y + arm, class: 'pick-cross' }),
      s('circle', { cx: x, cy: y, r: this._px(4), class: 'pick-dot' }),
    );
  }

  _scale(mpp) {
    const target = 110 * mpp;
    const step = SCALE_STEPS.reduce((best, v) => (Math.abs(v - target) < Math.abs(best - target) ? v : best));
    this.scaleBar.firstChild.style.width = `${step / mpp}px`;
    this.scaleBar.lastChild.textContent = metres(step);
  }

  // --- input --------------------------------------------------------------------------------

  _click(event) {
    if (this._dragged) return;
    const cluster = this.store ? this._clusterAt(event) : null;
    if (cluster?.camera && this.onCamera && this.onCamera(cluster.camera, event) !== false) return;
    if (cluster && !cluster.camera && this.canZoom()) {
      this._zoomAround(cluster.lat, cluster.lon, 0.33);
      return;
    }
    const cameraEl = event.target.closest('[data-camera]');
    if (cameraEl && this.onCamera) {
      const camera = this.cameras.find((c) => c.camera_id === cameraEl.dataset.camera);
      if (camera && this.onCamera(camera, event) !== false) return;
    }
    const incidentEl = event.target.closest('[data-incident]');
    if (incidentEl && this.onIncident && event.target.classList.contains('incident-core')
        && this.onIncident(incidentEl.dataset.incident) !== false) {
      return;
    }
    if (!this.onPick || !this.origin) return;
    const point = this.svg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    const local = point.matrixTransform(this.svg.getScreenCTM().inverse());
    const [lat, lon] = this._unproject(local.x, local.y);
    this.onPick(Math.round(lat * 1e6) / 1e6, Math.round(lon * 1e6) / 1e6);
  }
}
