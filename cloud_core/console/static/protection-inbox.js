// The protection centre's SOS inbox: wearable SOS and safe-zone exits as they arrive (pushed by
// the core), newest first. Opening an alert opens its incident with the nearest cameras live; a
// new alert opens by itself unless the operator is already working on an incident.

import { h } from './dom.js';
import { kstTime, typeLabel } from './format.js';

const SERVICE = 'vulnerable-person-support';
const KEPT = 50;

export class ProtectionInbox {
  constructor(app) {
    this.app = app;
    this.alerts = new Map();   // incident id → incident, newest last
    this.list = h('ol', { class: 'inbox-list' });
    this.count = h('span', { class: 'count' }, '0');
    this.el = h('aside', { class: 'protection-inbox', 'aria-live': 'polite' },
      h('h2', {}, 'SOS inbox ', this.count), this.list);
  }

  /** Open alerts already there when the console signs in. */
  seed(incidents) {
    for (const incident of incidents) if (incident.service === SERVICE) this.alerts.set(incident.incident_id, incident);
    this._render();
  }

  onIncidentEvent(event) {
    const incident = event.incident;
    if (incident.service !== SERVICE) return;
    if (!incident.open) this.alerts.delete(incident.incident_id);
    else {
      this.alerts.delete(incident.incident_id);
      this.alerts.set(incident.incident_id, incident);
    }
    while (this.alerts.size > KEPT) this.alerts.delete(this.alerts.keys().next().value);
    this._render();
    if (event.kind === 'reported' && incident.open && !this.app.view?.incidentId) {
      this.app.navigate(`#/incident/${incident.incident_id}`);
    }
  }

  _render() {
    const alerts = [...this.alerts.values()].reverse();
    this.count.textContent = String(alerts.length);
    const open = (incident) => this.app.navigate(`#/incident/${incident.incident_id}`);
    this.list.replaceChildren(...(alerts.length ? alerts.map((incident) => h('li', {
      class: `alert ${incident.incident_type}`, dataset: { incident: incident.incident_id },
      role: 'button', tabindex: 0, title: 'open the incident with its nearest cameras live',
      onclick: () => open(incident),
    }, h('b', {}, typeLabel(incident.incident_type)),
    h('span', { class: 'mono' }, ` ${incident.lat.toFixed(4)}, ${incident.lon.toFixed(4)}`),
    h('small', {}, ` ${kstTime(incident.trail.at(-1)?.at ?? incident.opened_at)} KST`),
    incident.links.length ? h('small', { class: 'handed' }, ' · handed off') : '',
    h('span', { class: 'open-link' }, 'Open ›')))
      : [h('li', { class: 'empty' }, 'No open alert')]));
  }
}
