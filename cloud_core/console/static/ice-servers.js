// TURN for a console behind NAT: the relay credentials the core mints for this operator.
//
// Offers are made ahead of time (OfferPool) and WHEP does not trickle, so the browser needs its
// TURN servers before it offers: fetched once after sign-in (GET /api/ice-servers), refetched
// well before they expire. A core without [turn] answers an empty list and nothing is refetched.
//
// ``?ice-transport=relay`` on the page (or window.safetynet.iceTransportPolicy = 'relay' before
// sign-in) makes every peer connection relay only: for tests of the relay path; off by default.

import { ApiError } from './api.js';

const REFRESH_AT = 0.5;            // refetch at half the credential's lifetime …
const MIN_REFRESH_MS = 30 * 1000;  // … but not more often than this
const RETRY_MS = 10 * 1000;        // a failed fetch is retried
const EXPIRY_MARGIN_MS = 5 * 60 * 1000;   // an offer with less left than this is not used …
const EXPIRY_MARGIN_SHARE = 0.25;         // … or than this share of a short lifetime

/** 'relay' when the page asks for relay-only ICE (tests), else 'all'. */
export function transportPolicy() {
  const asked = new URLSearchParams(location.search).get('ice-transport')
    ?? window.safetynet?.iceTransportPolicy;
  return asked === 'relay' ? 'relay' : 'all';
}

export class IceServers {
  constructor(api) {
    this.api = api;
    this.servers = [];
    this.expiresAt = null;       // ms since the epoch (browser clock), null: never
    this.marginMs = 0;
    this.generation = 0;         // bumps with every new set of credentials
    this.policy = transportPolicy();
    this._timer = null;
    this._closed = false;
    this._listeners = [];
    this.ready = Promise.resolve();
  }

  /** Fetch the first set; ``ready`` resolves (never rejects) once it is known or failed. */
  start() {
    this.ready = this._fetch();
    return this.ready;
  }

  /** The RTCConfiguration for a new peer connection, tagged with its generation. */
  configuration() {
    return { iceServers: this.servers, iceTransportPolicy: this.policy };
  }

  /** Whether offers made with ``generation``'s credentials can still be used for a while. */
  usable(generation) {
    if (generation !== this.generation) return false;
    return this.expiresAt === null || this.expiresAt - Date.now() > this.marginMs;
  }

  onChange(listener) {
    this._listeners.push(listener);
  }

  close() {
    this._closed = true;
    clearTimeout(this._timer);
    this._listeners = [];
  }

  async _fetch() {
    if (this._closed) return;
    let answer;
    try {
      answer = await this.api.get('/api/ice-servers');
    } catch (err) {
      if (this._closed) return;
      if (err instanceof ApiError && err.status === 403) return;   // this role views no video
      console.warn('ice servers: cannot fetch TURN credentials', err.message);
      this._schedule(RETRY_MS);
      return;
    }
    if (this._closed) return;
    const servers = answer.iceServers ?? [];
    // Served with the core's clock: keep the lifetime, not the absolute time.
    const ttlMs = (answer.ttl_seconds ?? 0) * 1000;
    this.servers = servers;
    this.expiresAt = servers.length && ttlMs ? Date.now() + ttlMs : null;
    this.marginMs = Math.min(EXPIRY_MARGIN_MS, ttlMs * EXPIRY_MARGIN_SHARE);
    this.generation += 1;
    console.info(`ice servers: ${servers.length} TURN server(s)${this.policy === 'relay' ? ', relay only' : ''}`);
    for (const listener of this._listeners) listener(this.generation);
    if (this.expiresAt !== null) this._schedule(Math.max(MIN_REFRESH_MS, ttlMs * REFRESH_AT));
  }

  _schedule(ms) {
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._fetch(), ms);
  }
}
