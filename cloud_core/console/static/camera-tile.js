// One live camera tile: a browser RTCPeerConnection opened through WHEP, media straight from
// the district's edge agent, and honest words whenever there is no picture.
//
// A tile knows its state from three sources: the core's answer when it opens (denied, offline,
// agent unreachable), the session's state on the core, polled every second (grant ended and
// why), and the peer connection and its stats (connected, frames decoded, stalled).

import { ApiError, SignedOut } from './api.js';
import { h } from './dom.js';
import { cameraStatusText, duration, metres } from './format.js';

const POLL_MS = 1000;
const STALL_POLLS = 3;           // no new frame for 3 s: say so
const CONNECT_TIMEOUT_MS = 10000;
const GATHER_TIMEOUT_MS = 3000;

// Why a session ended, as the core records it, in the operator's words.
const GRANT_ENDS = new Set(['incident closed', 'incident time box ended', 'incident gone', 'grant expired',
  'expired', 'break-glass stopped', 'break-glass ended', 'operator disabled']);

function endOf(reason) {
  if (GRANT_ENDS.has(reason) || reason.startsWith('revoked by')) return ['ended', `grant ended: ${reason}`];
  if (reason === 'closed by viewer' || reason === 'viewer left') return ['closed', 'closed'];
  if (reason === 'agent stopping') return ['unreachable', 'agent unreachable: the district agent stopped'];
  if (reason === 'connection failed' || reason === 'viewer never connected') {
    return ['unreachable', `agent unreachable: ${reason}`];
  }
  return ['ended', `session ended: ${reason || 'no reason given'}`];
}

// --- offers ---------------------------------------------------------------------------------

function h264Only(transceiver) {
  const codecs = RTCRtpReceiver.getCapabilities('video').codecs
    .filter((c) => /^video\/(h264|rtx)$/i.test(c.mimeType));
  transceiver.setCodecPreferences(codecs);   // the agent passes the camera's H.264 through
}

function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const timer = setTimeout(resolve, GATHER_TIMEOUT_MS);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

/**
 * A receive-only peer connection with a complete offer (the agent does not trickle ICE), made
 * with ``ice``'s TURN servers (IceServers) when there are some; ``generation`` says with which.
 */
async function completeOffer(ice) {
  const generation = ice?.generation ?? 0;
  const pc = new RTCPeerConnection(ice?.configuration() ?? { iceServers: [] });
  const transceiver = pc.addTransceiver('video', { direction: 'recvonly' });
  h264Only(transceiver);
  await pc.setLocalDescription();
  await gathered(pc);
  return { pc, transceiver, generation };
}

/**
 * Offers made ahead of time. Gathering ICE candidates takes Chromium ~150 ms; an operator
 * waiting for an incident's first picture should not wait for it, so a few complete offers are
 * kept ready and refilled in the background. An offer's relay candidates live as long as the
 * TURN credentials it was made with: when ``ice`` gets new ones, older offers are dropped.
 */
export class OfferPool {
  constructor(size = 4, ice = null) {
    this.size = size;
    this.ice = ice;
    this.ready = [];
    this.making = 0;
    this.closed = false;
    ice?.onChange(() => this._dropStale());
  }

  start() {
    this._fill();
  }

  _usable(offer) {
    return !this.ice || this.ice.usable(offer.generation);
  }

  _current(offer) {
    return !this.ice || offer.generation === this.ice.generation;
  }

  /** New credentials: offers made with older ones go, new ones are made. */
  _dropStale() {
    const stale = this.ready.filter((offer) => !this._current(offer));
    this.ready = this.ready.filter((offer) => this._current(offer));
    for (const offer of stale) offer.pc.close();
    this._fill();
  }

  _fill() {
    while (!this.closed && this.ready.length + this.making < this.size) {
      this.making += 1;
      completeOffer(this.ice).then((offer) => {
        this.making -= 1;
        if (this.closed) offer.pc.close();
        else if (!this._current(offer)) {   // new credentials came while it gathered
          offer.pc.close();
          this._fill();
        } else this.ready.push(offer);
      }, (err) => {
        this.making -= 1;
        console.warn('offer pool: cannot make an offer', err);
      });
    }
  }

  async take() {
    await this.ice?.ready;
    let offer = this.ready.shift();
    while (offer && !this._usable(offer)) {   // its credentials are about to expire
      offer.pc.close();
      offer = this.ready.shift();
    }
    this._fill();
    return offer ?? completeOffer(this.ice);
  }

  close() {
    this.closed = true;
    for (const offer of this.ready) offer.pc.close();
    this.ready = [];
  }
}

// --- the tile -------------------------------------------------------------------------------

export class CameraTile {
  /**
   * camera: {camera_id, name, distance_m, status, reason}; incidentId: the justification sent
   * with the offer; onFirstFrame(tile, at): the first decoded frame was shown (performance.now());
   * client: who reports that first frame to the core ('console', 'officer').
   */
  constructor({ api, pool, camera, rank = null, incidentId = '', onFirstFrame, onRemoved, note = '',
    client = 'console' }) {
    this.api = api;
    this.pool = pool;
    this.camera = camera;
    this.rank = rank;
    this.incidentId = incidentId;
    this.onFirstFrame = onFirstFrame;
    this.onRemoved = onRemoved;
    this.client = client;
    this.firstFrameReport = null;   // the core's answer to the first-frame report (for tests)
    this.actions = [];
    this.state = 'idle';
    this.message = '';
    this.sessionId = '';
    this.location = '';
    this.expiresAt = null;
    this.clockSkewMs = 0;
    this.framesDecoded = 0;
    this.firstFrameAt = null;
    this.openedAt = null;
    this._generation = 0;
    this._timers = [];
    this._stalls = 0;
    this.pc = null;

    this.video = h('video', { muted: true, autoplay: true, playsInline: true });
    this.video.muted = true;
    this.messageEl = h('div', { class: 'tile-message' });
    this.retryEl = h('button', { class: 'tile-retry', type: 'button', onclick: () => this.open() }, 'Retry');
    this.liveEl = h('span', { class: 'tile-live' }, 'LIVE');
    this.statsEl = h('span', { class: 'tile-stats' });
    this.statusEl = h('span', { class: 'tile-status', role: 'status', hidden: true });
    this.grantEl = h('span', { class: 'tile-grant', title: 'time left on the grant' }, '—');
    this.toolsEl = h('div', { class: 'tile-tools', hidden: true });
    this.noteEl = h('p', { class: 'tile-note', role: 'status', hidden: true });
    this.el = h('article', { class: 'tile', dataset: { camera: camera.camera_id, state: 'idle' } },
      h('div', { class: 'tile-video' },
        this.video,
        h('div', { class: 'tile-overlay' }, this.messageEl, this.retryEl),
        h('div', { class: 'tile-badges' }, this.liveEl, this.statusEl, this.statsEl)),
      h('footer', { class: 'tile-bar' },
        rank ? h('span', { class: 'tile-rank' }, rank) : h('span', { class: 'tile-rank extra' }, '+'),
        h('span', { class: 'tile-name', title: camera.camera_id }, camera.name,
          h('small', {}, camera.camera_id + (note ? ` · ${note}` : ''))),
        h('span', { class: 'tile-distance', title: 'distance from the incident' }, metres(camera.distance_m)),
        this.grantEl,
        h('button', { class: 'tile-close', type: 'button', title: 'Close this camera', 'aria-label': 'close',
          onclick: () => (this.active ? this.close() : this.remove()) }, '✕')),
      this.toolsEl, this.noteEl);
  }

  /**
   * A button in the tile's tool row, usable while the tile is live: ``run(tile)`` returns the
   * words to show under the tile (or throws; the error's message is shown as a refusal).
   */
  addAction({ label, cls, title, run }) {
    const button = h('button', { type: 'button', class: `tile-action ${cls}`, title, disabled: true,
      onclick: async () => {
        button.disabled = true;
        this.say(`${label}…`, 'busy');
        try {
          this.say(await run(this), 'done');
        } catch (err) {
          if (err instanceof SignedOut) return;
          const why = err.message.startsWith('the agent refused') ? err.message : `refused: ${err.message}`;
          this.say(err instanceof ApiError && err.status === 403 ? `permission denied: ${err.message}` : why,
            'refused');
        } finally {
          button.disabled = this.state !== 'live';
        }
      } }, label);
    this.actions.push(button);
    this.toolsEl.append(button);
    this.toolsEl.hidden = false;
    return button;
  }

  /** Words under the tile: what an action did, or why it was refused. */
  say(text, kind = 'done') {
    this.noteEl.textContent = text;
    this.noteEl.dataset.kind = kind;
    this.noteEl.hidden = !text;
  }

  _setState(state, message = '') {
    if (this.state !== state || this.message !== message) {
      console.info(`tile ${this.camera.camera_id}: ${this.state} → ${state}${message ? ` (${message})` : ''}`);
    }
    this.state = state;
    this.message = message;
    this.el.dataset.state = state;
    for (const button of this.actions) button.disabled = state !== 'live';
    this.messageEl.textContent = message;
    this.retryEl.hidden = !['denied', 'offline', 'unknown', 'unreachable', 'error', 'closed'].includes(state);
    this.retryEl.textContent = state === 'closed' ? 'Reopen' : 'Retry';
  }

  /**
   * What the map knows about the camera changed (online, offline or unknown). Unknown (the core
   * lost its broker) says so on the tile and leaves its video alone: media comes straight from
   * the agent, not through the broker. A tile that did not open for want of a status opens when
   * the status is back.
   */
  cameraStatus(camera) {
    this.camera = { ...this.camera, status: camera.status, reason: camera.reason };
    this._showStatus();
    if (this.state === 'unknown') {
      if (camera.status === 'online') this.open();
      else this._openRefused(this.camera);
      return;
    }
    if (camera.status === 'unknown') {
      // What was said of a stalled picture (camera offline) is no longer known either.
      if (this.state === 'stalled') this._setState('stalled', cameraStatusText(this.camera));
      return;
    }
    if (camera.status !== 'online' && ['live', 'stalled', 'connecting'].includes(this.state)) {
      this._setState('stalled', camera.reason === 'agent_offline'
        ? 'agent unreachable: the district agent is offline'
        : `camera offline${camera.reason ? `: ${camera.reason.replaceAll('_', ' ')}` : ''}`);
    }
  }

  /** Why a camera that is not online is not opened, in the tile. */
  _openRefused(camera) {
    if (camera.status === 'unknown') {
      this._setState('unknown', cameraStatusText(camera));
    } else if (camera.reason === 'agent_offline') {
      this._setState('unreachable', 'agent unreachable: the district agent is offline');
    } else {
      this._setState('offline', `camera offline${camera.reason ? `: ${camera.reason.replaceAll('_', ' ')}` : ''}`);
    }
  }

  /** The badge over the video while the camera's status is unknown. */
  _showStatus() {
    const unknown = this.camera.status === 'unknown';
    this.statusEl.hidden = !unknown;
    this.statusEl.textContent = unknown ? cameraStatusText(this.camera) : '';
    this.el.dataset.status = this.camera.status ?? '';
  }

  async open() {
    this._teardown();
    const generation = ++this._generation;
    const camera = this.camera;
    this._showStatus();
    if (camera.status && camera.status !== 'online') {
      this._openRefused(camera);
      return;
    }
    this._setState('opening', 'opening…');
    this.openedAt = performance.now();
    let offer;
    try {
      offer = await this.pool.take();
    } catch (err) {
      this._setState('error', `this browser cannot open WebRTC video: ${err.message}`);
      return;
    }
    const { pc, transceiver } = offer;
    if (generation !== this._generation) {
      pc.close();
      return;
    }
    this.pc = pc;
    this.framesDecoded = 0;
    this.firstFrameAt = null;
    this.video.srcObject = new MediaStream([transceiver.receiver.track]);
    this._watchFrames(generation);
    pc.addEventListener('connectionstatechange', () => this._onConnectionState(generation));
    let answer;
    try {
      answer = await this.api.whepOpen(camera.camera_id, pc.localDescription.sdp, { incident: this.incidentId });
    } catch (err) {
      if (generation !== this._generation) return;
      this._teardown();
      this._refused(err);
      return;
    }
    if (generation !== this._generation) {
      this.api.whepClose(answer.location).catch(() => {});
      return;
    }
    this.location = answer.location;
    this.sessionId = answer.sessionId;
    this.el.dataset.session = answer.sessionId;
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    } catch (err) {
      if (generation !== this._generation) return;
      this._end('error', `cannot use the agent's answer: ${err.message}`);
      this.api.whepClose(answer.location).catch(() => {});
      return;
    }
    if (generation !== this._generation) return;
    this._setState('connecting', 'connecting to the district agent…');
    this._every(POLL_MS, () => this._pollSession(generation));
    this._every(POLL_MS, () => this._pollStats(generation));
    this._timers.push(setTimeout(() => {
      if (generation === this._generation && this.state === 'connecting') {
        this._end('unreachable', `agent unreachable: no video within ${CONNECT_TIMEOUT_MS / 1000} s`);
      }
    }, CONNECT_TIMEOUT_MS));
    this._pollSession(generation);
  }

  _refused(err) {
    if (err instanceof SignedOut) {
      this._setState('closed', 'signed out');
      return;
    }
    if (!(err instanceof ApiError)) {
      this._setState('error', `error: ${err.message}`);
      return;
    }
    switch (err.error) {
      case 'access_denied':
      case 'grant_rejected':
        this._setState('denied', `permission denied: ${err.message}`);
        break;
      case 'camera_offline':
        this._setState('offline', `camera offline: ${err.message}`);
        break;
      case 'agent_unavailable':
      case 'agent_busy':
      case 'agent_error':
        this._setState('unreachable', `agent unreachable: ${err.message}`);
        break;
      case 'core_unreachable':
        this._setState('error', err.message);
        break;
      default:
        this._setState('error', `cannot open: ${err.message}`);
    }
  }

  _every(ms, fn) {
    this._timers.push(setInterval(fn, ms));
  }

  _watchFrames(generation) {
    const shown = () => {
      if (generation !== this._generation) return;
      if (this.firstFrameAt === null) {
        this.firstFrameAt = performance.now();
        this.onFirstFrame?.(this, this.firstFrameAt);
        // Golden time is recorded by the core, on its clock: reported on the WHEP session.
        this.api.post(`${this.location}/first-frame`, { client: this.client }).then(
          (answer) => { this.firstFrameReport = answer; },
          (err) => { this.firstFrameReport = { error: err.message }; });
      }
      if (['opening', 'connecting', 'stalled'].includes(this.state)) this._setState('live');
    };
    if ('requestVideoFrameCallback' in this.video) {
      this.video.requestVideoFrameCallback(shown);
    } else {
      this.video.addEventListener('loadeddata', shown, { once: true });
    }
  }

  async _pollSession(generation) {
    if (!this.sessionId || generation !== this._generation) return;
    let state;
    try {
      state = await this.api.get(`/api/sessions/${encodeURIComponent(this.sessionId)}`);
    } catch (err) {
      if (generation !== this._generation) return;
      if (err instanceof SignedOut) this._end('closed', 'signed out');
      else if (err instanceof ApiError && err.status === 404) this._end('ended', 'session ended: the core no longer knows it');
      return;
    }
    if (generation !== this._generation) return;
    this.expiresAt = Date.parse(state.expires_at);
    this.clockSkewMs = Date.parse(state.now) - Date.now();
    this._showGrant();
    if (!state.active) {
      const [kind, words] = endOf(state.reason);
      this._end(kind, words);
    }
  }

  _showGrant() {
    if (!this.expiresAt) return;
    const left = this.expiresAt - (Date.now() + this.clockSkewMs);
    this.grantEl.textContent = `grant ${duration(left)}`;
    this.grantEl.classList.toggle('short', left < 5 * 60 * 1000);
  }

  async _pollStats(generation) {
    const pc = this.pc;
    if (!pc || generation !== this._generation) return;
    this._showGrant();
    let report;
    try {
      report = await pc.getStats();
    } catch {
      return;   // closed meanwhile
    }
    let inbound = null;
    report.forEach((stat) => {
      if (stat.type === 'inbound-rtp' && stat.kind === 'video') inbound = stat;
    });
    if (!inbound || generation !== this._generation) return;
    const decoded = inbound.framesDecoded ?? 0;
    const grew = decoded > this.framesDecoded;
    this.framesDecoded = decoded;
    if (inbound.frameWidth) {
      this.statsEl.textContent = `${inbound.frameWidth}×${inbound.frameHeight} · ${Math.round(inbound.framesPerSecond ?? 0)} fps`;
    }
    if (this.state === 'live' && !grew) {
      this._stalls += 1;
      if (this._stalls >= STALL_POLLS) this._setState('stalled', 'no video from the camera for 3 s — waiting');
    } else if (grew) {
      this._stalls = 0;
      if (this.state === 'stalled' && ['online', 'unknown'].includes(this.camera.status)) this._setState('live');
    }
  }

  async _onConnectionState(generation) {
    const pc = this.pc;
    if (!pc || generation !== this._generation) return;
    const state = pc.connectionState;
    if (state === 'failed') {
      // The core may know better (the grant ended and the agent hung up): ask it first.
      await this._pollSession(generation);
      if (generation === this._generation && !['ended', 'closed'].includes(this.state)) {
        this._end('unreachable', 'agent unreachable: the media connection failed');
      }
    } else if (state === 'disconnected' && this.state === 'live') {
      this._setState('stalled', 'connection to the district agent interrupted — waiting');
    }
  }

  /** Force a session poll now (e.g. right after the incident was closed). */
  refresh() {
    this._pollSession(this._generation);
  }

  _end(state, message) {
    this._teardown();
    this._setState(state, message);
    this.grantEl.textContent = state === 'ended' ? 'grant ended' : '—';
    this.grantEl.classList.remove('short');
  }

  /** Whether a session is (being) opened: the ✕ closes it; otherwise the ✕ removes the tile. */
  get active() {
    return ['opening', 'connecting', 'live', 'stalled'].includes(this.state);
  }

  _teardown() {
    for (const timer of this._timers) {
      clearInterval(timer);
      clearTimeout(timer);
    }
    this._timers = [];
    this._stalls = 0;
    const pc = this.pc;
    this.pc = null;
    if (pc) pc.close();
    this.video.srcObject = null;
  }

  /** Close the tile's session (WHEP DELETE). ``quiet``: leaving the view, no state shown. */
  async close({ quiet = false } = {}) {
    this._generation += 1;
    const location = this.active ? this.location : '';
    this._teardown();
    if (!quiet) {
      this._setState('closed', 'closed');
      this.grantEl.textContent = '—';
    }
    this.location = '';
    if (location) {
      try {
        await this.api.whepClose(location);
      } catch (err) {
        if (!(err instanceof SignedOut)) console.warn('close session', err);
      }
    }
  }

  /** The page is going away: end the session without waiting for an answer. */
  abandon() {
    if (this.active && this.location) {
      fetch(this.location, { method: 'DELETE', keepalive: true,
        headers: { Authorization: `Bearer ${this.api.token}` } }).catch(() => {});
    }
  }

  /** Close (if open) and take the tile off the screen. */
  async remove() {
    this.el.remove();
    this.onRemoved?.(this);
    await this.close({ quiet: true });
  }

  /** A summary for tests and the benchmark. */
  snapshot() {
    return {
      camera_id: this.camera.camera_id, state: this.state, message: this.message,
      status: this.camera.status ?? '', status_note: this.statusEl.hidden ? '' : this.statusEl.textContent,
      session_id: this.sessionId, frames_decoded: this.framesDecoded,
      first_frame_ms: this.firstFrameAt === null ? null : this.firstFrameAt - this.openedAt,
      first_frame_epoch_ms: this.firstFrameAt === null ? null : performance.timeOrigin + this.firstFrameAt,
      first_frame_report: this.firstFrameReport, note: this.noteEl.hidden ? '' : this.noteEl.textContent,
    };
  }
}
