// The page's side of the city's cameras: a worker (camera-worker.js) holds all of them, follows
// the pushed changes and clusters them; the page only ever receives what it draws.

export class CameraStore {
  /** onSignedOut(message): the worker's fetches were refused (token disabled). */
  constructor(token, { onSignedOut, onError } = {}) {
    this.worker = new Worker(new URL('./camera-worker.js', import.meta.url), { type: 'module' });
    this.listeners = { ready: [], clusters: [], counts: [], agents: [], cameras: [] };
    this.counts = null;
    this.agents = null;
    this.ready = null;
    this.worker.onmessage = ({ data }) => {
      if (data.type === 'signedout') onSignedOut?.(data.message);
      else if (data.type === 'error') onError?.(data.message);
      else {
        if (data.type === 'counts') this.counts = data;
        if (data.type === 'agents') this.agents = data.agents;
        if (data.type === 'ready') this.ready = data;
        for (const listener of this.listeners[data.type] ?? []) listener(data);
      }
    };
    this.worker.postMessage({ type: 'start', token });
  }

  /** listener(message) for 'ready' | 'clusters' | 'counts' | 'agents' | 'cameras'; returns an off(). */
  on(type, listener) {
    this.listeners[type].push(listener);
    return () => { this.listeners[type] = this.listeners[type].filter((l) => l !== listener); };
  }

  view(bbox, zoom) {
    this.worker.postMessage({ type: 'view', bbox, zoom });
  }

  watch(ids) {
    this.worker.postMessage({ type: 'watch', ids: [...ids] });
  }

  close() {
    this.worker.postMessage({ type: 'stop' });
    this.listeners = { ready: [], clusters: [], counts: [], agents: [], cameras: [] };
  }
}
