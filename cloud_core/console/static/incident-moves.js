// A moving incident's card: its trail, a new position (the grant follows it), the incidents
// linked to it, and the one-action hand-off its service allows (a wearable SOS to 112).

import { ApiError, SignedOut } from './api.js';
import { h } from './dom.js';
import { kstTime } from './format.js';

export class IncidentMoves {
  /** `onReport(report)` gets the incident as the core returns it after a move or hand-off. */
  constructor(app, incidentId, onReport) {
    this.app = app;
    this.incidentId = incidentId;
    this.onReport = onReport;
    this.error = h('p', { class: 'form-error', hidden: true });
    this.el = h('section', { class: 'card incident-moves' });
  }

  render(incident) {
    const path = `/api/incidents/${encodeURIComponent(this.incidentId)}`;
    const admitted = this.app.me.views_video && incident.agencies.includes(this.app.me.agency);
    const latest = incident.trail.at(-1);
    const at = h('input', { type: 'text', name: 'position', placeholder: 'lat,lon', spellcheck: false, maxlength: 40 });
    const move = h('form', { class: 'move-form', onsubmit: (event) => {
      event.preventDefault();
      const [lat, lon] = at.value.split(',').map(Number);
      this._act(`${path}/move`, { lat, lon }, false);
    } }, at, h('button', { type: 'submit' }, 'Move here'));
    const reason = h('input', { type: 'text', name: 'reason', placeholder: 'why, e.g. child not answering', maxlength: 500 });
    const handOff = h('form', { class: 'handoff-form', onsubmit: (event) => {
      event.preventDefault();
      this._act(`${path}/handoff`, { reason: reason.value.trim() || 'handed off from the console' }, true);
    } }, reason, h('button', { type: 'submit', class: 'primary', dataset: { action: 'handoff' } },
      `Hand off to ${incident.hand_off_title ?? incident.hand_off_to}`));
    this.el.replaceChildren(
      h('h2', {}, 'Movement'),
      h('p', {}, `${incident.trail.length} position${incident.trail.length === 1 ? '' : 's'}`,
        latest ? ` · latest ${kstTime(latest.at)} KST (${latest.source})` : ''),
      admitted && incident.open ? move : '',
      admitted && incident.open && incident.hand_off_to ? handOff : '',
      incident.links.length ? h('ul', { class: 'links' }, incident.links.map((link) => h('li', {},
        `${link.kind} ${link.outgoing ? 'to' : 'from'} `,
        h('a', { href: `#/incident/${link.incident_id}`, class: 'mono' }, link.incident_id)))) : '',
      this.error);
  }

  /** POST the action; a hand-off answers with the linked incident, so read ours again. */
  async _act(path, body, handOff) {
    this.error.hidden = true;
    try {
      const report = await this.app.api.post(path, body);
      this.onReport(handOff
        ? await this.app.api.get(`/api/incidents/${encodeURIComponent(this.incidentId)}`)
        : report);
    } catch (err) {
      if (err instanceof SignedOut) return;
      this.error.textContent = err instanceof ApiError ? err.message : String(err);
      this.error.hidden = false;
    }
  }
}
