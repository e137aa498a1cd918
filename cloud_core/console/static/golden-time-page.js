// Golden time as the core recorded it: report → grant → first frame, p50/p95 by service and day,
// and the rows behind them as a CSV export.

import { SignedOut } from './api.js';
import { h } from './dom.js';

const fmt = (ms) => (ms === null || ms === undefined ? '—' : `${Math.round(ms)} ms`);

export class GoldenTimePage {
  constructor(app) {
    this.app = app;
    this.body = h('tbody');
    this.error = h('p', { class: 'form-error', hidden: true });
    this.el = h('section', { class: 'golden-time-page card' },
      h('h1', {}, 'Golden time'),
      h('p', { class: 'subtitle' }, 'From the incident report to the first decoded frame, per camera, as the core recorded it.'),
      h('button', { type: 'button', onclick: () => this._export() }, 'Export CSV'),
      h('table', { class: 'golden-time' },
        h('thead', {}, h('tr', {}, ...['Day (UTC)', 'Service', 'Incidents', 'Cameras', 'Report→frame p50', 'p95',
          'Grant→frame p50', 'p95'].map((t) => h('th', {}, t)))), this.body),
      this.error);
  }

  async start() {
    try {
      const { days } = await this.app.api.get('/api/golden-time');
      this.body.replaceChildren(...(days.length ? days.map((d) => h('tr', {},
        h('td', {}, d.day), h('td', {}, d.service), h('td', {}, String(d.incidents)), h('td', {}, String(d.cameras)),
        h('td', {}, fmt(d.report_to_first_frame_ms.p50)), h('td', {}, fmt(d.report_to_first_frame_ms.p95)),
        h('td', {}, fmt(d.grant_to_first_frame_ms.p50)), h('td', {}, fmt(d.grant_to_first_frame_ms.p95))))
        : [h('tr', {}, h('td', { colspan: 8 }, 'Nothing recorded yet.'))]));
    } catch (err) {
      if (err instanceof SignedOut) return;
      this.error.textContent = err.message;
      this.error.hidden = false;
    }
  }

  async _export() {
    const response = await this.app.api.fetch('GET', '/api/golden-time?format=csv');
    const link = h('a', { href: URL.createObjectURL(await response.blob()), download: 'golden-time.csv' });
    link.click();
  }

  destroy() {}
}
