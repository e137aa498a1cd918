// The console's client for the core: JSON API and WHEP, bearer token on every call.
//
// Every call re-authenticates on the core. A 401 at any point means the token was disabled (or
// never valid): the console is told at once (onSignedOut) and the call throws SignedOut.

export class ApiError extends Error {
  constructor(status, error, message) {
    super(message);
    this.status = status;   // HTTP status; 0 when the core could not be reached
    this.error = error;     // the core's error kind: access_denied, camera_offline, …
  }
}

export class SignedOut extends Error {}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: fall back to the status line
  }
  return new ApiError(response.status, body?.error ?? 'http_error',
    body?.message ?? `${response.status} ${response.statusText}`);
}

export class Api {
  constructor(token, onSignedOut) {
    this.token = token;
    this.onSignedOut = onSignedOut;
  }

  async fetch(method, path, { json, sdp, accept } = {}) {
    const headers = { Authorization: `Bearer ${this.token}` };
    let body;
    if (json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(json);
    } else if (sdp !== undefined) {
      headers['Content-Type'] = 'application/sdp';
      body = sdp;
    }
    if (accept) headers.Accept = accept;
    let response;
    try {
      response = await fetch(path, { method, headers, body, cache: 'no-store' });
    } catch (err) {
      throw new ApiError(0, 'core_unreachable', `the core is unreachable (${err.message})`);
    }
    if (response.status === 401) {
      const error = await errorOf(response);
      this.onSignedOut?.(error.message);
      throw new SignedOut(error.message);
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async get(path) {
    return (await this.fetch('GET', path)).json();
  }

  async post(path, json) {
    return (await this.fetch('POST', path, { json })).json();
  }

  /** WHEP: POST a complete offer; the answer and the session's resource URL. */
  async whepOpen(cameraId, offerSdp, { incident = '', breakglass = '' } = {}) {
    const query = new URLSearchParams();
    if (incident) query.set('incident', incident);
    if (breakglass) query.set('breakglass', breakglass);
    const suffix = query.size ? `?${query}` : '';
    const response = await this.fetch('POST', `/whep/cameras/${encodeURIComponent(cameraId)}${suffix}`,
      { sdp: offerSdp, accept: 'application/sdp' });
    const location = response.headers.get('Location');
    return { sdp: await response.text(), location, sessionId: location.split('/').pop() };
  }

  /** WHEP: DELETE the session's resource; a session already gone is fine. */
  async whepClose(location) {
    try {
      await this.fetch('DELETE', location);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
    }
  }
}
