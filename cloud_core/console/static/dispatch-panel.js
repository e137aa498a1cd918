// The 112 room's dispatch card on an incident: its agency's field officers, who is dispatched,
// and what was pushed to them (stills taken at the agent, live-camera hand-offs). The core
// pushes every change (GET /api/events, kind "dispatch"), so two room consoles agree.

import { ApiError, SignedOut } from './api.js';
import { h } from './dom.js';
import { kstTime } from './format.js';

function kb(bytes) {
  return bytes >= 1024 ? `${Math.round(bytes / 1024)} kB` : `${bytes} B`;
}

export class DispatchPanel {
  constructor(app, incidentId, onActive) {
    this.app = app;
    this.incidentId = incidentId;
    this.onActive = onActive;     // called once the room has officers to dispatch (or has some)
    this.officers = [];           // the agency's field officers: {officer_id, name, incidents}
    this.state = { officers: [], pushes: [] };
    this.active = false;
    this.select = h('select', { name: 'officer', 'aria-label': 'field officer to dispatch' });
    this.dispatchButton = h('button', { type: 'submit', class: 'primary' }, 'Dispatch');
    this.error = h('p', { class: 'form-error', role: 'alert', hidden: true });
    this.dispatchedList = h('ul', { class: 'dispatched' });
    this.pushList = h('ol', { class: 'push-log' });
    this.el = h('section', { class: 'card dispatch-card', hidden: true },
      h('h2', {}, 'Dispatch to officers'),
      h('h3', {}, 'Dispatched'), this.dispatchedList,
      h('form', { class: 'dispatch-form', onsubmit: (event) => { event.preventDefault(); this.assign(this.select.value); } },
        this.select, this.dispatchButton),
      this.error,
      h('h3', {}, 'Pushed to them'), this.pushList);
  }

  async start() {
    const api = this.app.api;
    const path = `/api/incidents/${encodeURIComponent(this.incidentId)}/dispatch`;
    try {
      const [officers, state] = await Promise.all([api.get('/api/dispatch/officers'), api.get(path)]);
      this.officers = officers.officers;
      this.render(state);
    } catch (err) {
      if (!(err instanceof SignedOut)) console.warn('dispatch: cannot load', err);
    }
  }

  /** The officers now dispatched, for the tiles' words. */
  get dispatched() {
    return this.state.officers;
  }

  render(state) {
    this.state = state;
    if (!this.active && (this.officers.length || state.officers.length)) {
      this.active = true;
      this.el.hidden = false;
      this.onActive?.();
    }
    const name = (id) => this.officers.find((o) => o.officer_id === id)?.name ?? id;
    this.dispatchedList.replaceChildren(...(state.officers.length ? state.officers.map((id) => h('li', {
      dataset: { officer: id } }, h('span', { class: 'name' }, name(id)),
    name(id) !== id ? h('small', { class: 'mono' }, id) : '',
    h('button', { type: 'button', class: 'recall', onclick: () => this.recall(id) }, 'Recall')))
      : [h('li', { class: 'empty' }, 'No officer dispatched yet.')]));
    const free = this.officers.filter((o) => !state.officers.includes(o.officer_id));
    this.select.replaceChildren(...(free.length ? free.map((o) => h('option', { value: o.officer_id },
      `${o.name}${o.name !== o.officer_id ? ` (${o.officer_id})` : ''}${o.incidents.length ? ` · on ${o.incidents.length} other` : ''}`))
      : [h('option', { value: '' }, 'every field officer is dispatched')]));
    this.select.disabled = !free.length;
    this.dispatchButton.disabled = !free.length;
    this.pushList.replaceChildren(...[...state.pushes].reverse().map((push) => h('li', {
      class: `push ${push.kind}`, dataset: { push: push.push_id } },
    h('span', { class: 'mono' }, `${kstTime(push.at)}`), ' ',
    push.kind === 'still' ? `still of ${push.camera_id} (${kb(push.bytes)})` : `${push.camera_id} handed off live`)));
    if (!state.pushes.length) this.pushList.append(h('li', { class: 'empty' }, 'Nothing pushed yet.'));
  }

  async _post(action, body) {
    this.error.hidden = true;
    return this.app.api.post(`/api/incidents/${encodeURIComponent(this.incidentId)}/dispatch/${action}`, body);
  }

  async _change(action, officerId) {
    if (!officerId) return;
    try {
      this.render(await this._post(action, { officer_id: officerId }));
    } catch (err) {
      if (err instanceof SignedOut) return;
      this.error.textContent = err instanceof ApiError && err.status === 403
        ? `permission denied: ${err.message}` : err.message;
      this.error.hidden = false;
    }
  }

  assign(officerId) {
    return this._change('assign', officerId);
  }

  recall(officerId) {
    return this._change('unassign', officerId);
  }

  _to() {
    return this.dispatched.length ? `to ${this.dispatched.join(', ')}` : '(no officer dispatched yet: those dispatched later see it)';
  }

  /** A still of ``cameraId`` taken at its agent, pushed to the officers; the words for the tile. */
  async pushStill(cameraId) {
    const push = await this._post('still', { camera_id: cameraId });
    return `still sent ${this._to()} · ${kb(push.bytes)} · sha256 ${push.sha256.slice(0, 12)}…`;
  }

  /** Hand ``cameraId`` off live to the officers; the words for the tile. */
  async handOff(cameraId) {
    await this._post('camera', { camera_id: cameraId });
    return `handed off live ${this._to()}`;
  }
}
