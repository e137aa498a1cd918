// The core's server-sent incident events (GET /api/events), read with fetch so the bearer token
// goes in a header (EventSource cannot send one). Reconnects with capped, jittered backoff.

export class EventStream {
  constructor(token, onEvent) {
    this.token = token;
    this.onEvent = onEvent;
    this.controller = null;
    this.closed = false;
    this.connected = false;
  }

  start() {
    this._run();
  }

  close() {
    this.closed = true;
    this.controller?.abort();
  }

  async _run() {
    let delay = 250;
    while (!this.closed) {
      try {
        await this._read();
        delay = 250;
      } catch (err) {
        if (this.closed) return;
      }
      this.connected = false;
      if (this.closed) return;
      await new Promise((resolve) => { setTimeout(resolve, delay * (0.5 + Math.random())); });
      delay = Math.min(delay * 2, 10_000);
    }
  }

  async _read() {
    this.controller = new AbortController();
    const response = await fetch('/api/events', {
      headers: { Authorization: `Bearer ${this.token}`, Accept: 'text/event-stream' },
      cache: 'no-store', signal: this.controller.signal,
    });
    if (!response.ok) throw new Error(`event stream: ${response.status}`);
    this.connected = true;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split('\n').filter((line) => line.startsWith('data: '))
          .map((line) => line.slice(6)).join('\n');
        if (data) this.onEvent(JSON.parse(data));
      }
    }
  }
}
