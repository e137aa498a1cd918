// The audit page (auditors only): search the tamper-evident log by operator, camera, incident
// and period; see whether its hash chain and signed checkpoints verify; export (recorded).

import { ApiError, SignedOut } from './api.js';
import { h } from './dom.js';
import { kstDateTime } from './format.js';

const ACTIONS = ['access.grant', 'access.deny', 'session.open', 'session.close', 'incident.report',
  'incident.close', 'incident.expire', 'grant.revoke', 'breakglass.start', 'breakglass.stop',
  'audit.export', 'operator.add'];

function isoOrEmpty(localValue) {
  // <input type=datetime-local> is the browser's local time; the core wants an absolute time.
  return localValue ? new Date(localValue).toISOString() : '';
}

export class AuditPage {
  constructor(app) {
    this.app = app;
    this.chain = h('div', { class: 'chain-status checking' }, 'Verifying the audit chain…');
    const field = (name, label, props = {}) => h('label', {}, label,
      this[name] = h('input', { name, type: 'text', spellcheck: false, ...props }));
    this.action = h('select', { name: 'action' }, h('option', { value: '' }, 'any action'),
      ACTIONS.map((a) => h('option', { value: a }, a)));
    this.form = h('form', { class: 'card audit-filters', onsubmit: (event) => { event.preventDefault(); this.search(); } },
      field('operator', 'Operator', { placeholder: 'operator id' }),
      field('camera', 'Camera', { placeholder: 'camera id' }),
      field('incident', 'Incident', { placeholder: 'INC-…' }),
      h('label', {}, 'Action', this.action),
      field('since', 'From', { type: 'datetime-local', step: 1 }),
      field('until', 'Until', { type: 'datetime-local', step: 1 }),
      h('div', { class: 'filter-buttons' },
        h('button', { type: 'submit', class: 'primary' }, 'Search'),
        h('button', { type: 'button', onclick: () => this.export() }, 'Export period as CSV')));
    this.summary = h('p', { class: 'muted audit-summary' });
    this.rows = h('tbody');
    this.error = h('p', { class: 'form-error', hidden: true });
    this.el = h('section', { class: 'audit-view' },
      h('div', { class: 'audit-head' }, h('h1', {}, 'Audit log'),
        h('p', { class: 'subtitle' }, 'Every decision, view and export: who, what, when, why, on what legal basis.')),
      this.chain, this.form, this.error, this.summary,
      h('div', { class: 'table-wrap' }, h('table', { class: 'audit-table' },
        h('thead', {}, h('tr', {}, ['#', 'Time (KST)', 'Action', 'Outcome', 'Operator', 'Agency', 'Cameras', 'Incident', 'Reason / purpose']
          .map((title) => h('th', {}, title)))),
        this.rows)));
  }

  start() {
    this.verify();
    this.search();
  }

  destroy() {}

  _query() {
    const query = new URLSearchParams();
    for (const name of ['operator', 'camera', 'incident']) {
      const value = this[name].value.trim();
      if (value) query.set(name, value);
    }
    if (this.action.value) query.set('action', this.action.value);
    const since = isoOrEmpty(this.since.value);
    const until = isoOrEmpty(this.until.value);
    if (since) query.set('since', since);
    if (until) query.set('until', until);
    return query;
  }

  async verify() {
    this.chain.className = 'chain-status checking';
    this.chain.textContent = 'Verifying the audit chain…';
    let report;
    try {
      report = await this.app.api.get('/api/audit/verify');
    } catch (err) {
      if (err instanceof SignedOut) return;
      this.chain.className = 'chain-status broken';
      this.chain.textContent = `Cannot verify the audit chain: ${err.message}`;
      return;
    }
    const again = h('button', { type: 'button', onclick: () => this.verify() }, 'Verify again');
    if (report.ok) {
      this.chain.className = 'chain-status ok';
      this.chain.replaceChildren(
        h('b', {}, '✔ Audit chain verified'),
        h('span', {}, `${report.records} record${report.records === 1 ? '' : 's'} · head #${report.head_seq} `,
          h('span', { class: 'mono' }, (report.head_hash || '').slice(0, 16)),
          ` · ${report.checkpoints} signed checkpoint${report.checkpoints === 1 ? '' : 's'}`,
          report.last_checkpoint_seq ? ` (last #${report.last_checkpoint_seq})` : '',
          ` · ${report.unattested} not yet attested`,
          report.key_trusted ? ' · signing key trusted' : ' · signing key NOT independently trusted',
          ` · checked ${kstDateTime(report.checked_at)}`),
        ...report.warnings.map((w) => h('span', { class: 'warning' }, `warning: ${w}`)),
        again);
    } else {
      this.chain.className = 'chain-status broken';
      this.chain.replaceChildren(
        h('b', {}, `✖ AUDIT CHAIN BROKEN at record #${report.broken_seq}`),
        h('span', {}, report.problem),
        h('ul', {}, report.problems.slice(0, 10).map(([seq, problem]) => h('li', {}, `#${seq}: ${problem}`))),
        again);
    }
  }

  async search() {
    this.error.hidden = true;
    const query = this._query();
    query.set('limit', '200');
    let result;
    try {
      result = await this.app.api.get(`/api/audit?${query}`);
    } catch (err) {
      if (err instanceof SignedOut) return;
      this.error.textContent = err instanceof ApiError && err.status === 403 ? `permission denied: ${err.message}` : err.message;
      this.error.hidden = false;
      return;
    }
    this.summary.textContent = `${result.records.length}${result.more ? '+' : ''} record${result.records.length === 1 ? '' : 's'}, newest first`;
    this.rows.replaceChildren(...result.records.flatMap((record) => this._row(record)));
  }

  _row(record) {
    const details = h('tr', { class: 'details', hidden: true },
      h('td', { colspan: 9 }, h('pre', {}, JSON.stringify(record, null, 2))));
    const row = h('tr', {
      class: `outcome-${record.outcome}`, dataset: { seq: record.seq },
      onclick: () => { details.hidden = !details.hidden; },
    },
    h('td', { class: 'mono' }, record.seq),
    h('td', { class: 'mono' }, kstDateTime(record.at)),
    h('td', {}, h('span', { class: 'action' }, record.action)),
    h('td', {}, h('span', { class: `outcome ${record.outcome}` }, record.outcome)),
    h('td', {}, record.operator_id),
    h('td', {}, record.agency ?? ''),
    h('td', { class: 'mono' }, (record.camera_ids || []).join(', ')),
    h('td', { class: 'mono' }, record.incident_id ?? ''),
    h('td', {}, record.reason || record.purpose || ''));
    return [row, details];
  }

  async export() {
    this.error.hidden = true;
    const query = this._query();
    for (const name of ['operator', 'camera', 'incident', 'action']) query.delete(name);
    query.set('format', 'csv');
    try {
      const response = await this.app.api.fetch('GET', `/api/audit/export?${query}`);
      const blob = await response.blob();
      const name = /filename="([^"]+)"/.exec(response.headers.get('Content-Disposition') || '')?.[1] ?? 'audit.csv';
      const link = h('a', { href: URL.createObjectURL(blob), download: name });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
      this.summary.textContent = `Exported ${name} (the export itself is on the record).`;
    } catch (err) {
      if (err instanceof SignedOut) return;
      this.error.textContent = err.message;
      this.error.hidden = false;
    }
  }
}
