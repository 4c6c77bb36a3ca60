// The agent's log, streamed from /v1/agent/monitor while the page is open.

import {h} from './dom.js';
import {apiHeaders} from './api.js';

const MAX_LINES = 1000;
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

export function logsView(ctx) {
  ctx.title('Logs');
  const params = new URLSearchParams(location.search);
  const initial = LEVELS.includes(params.get('level')) ? params.get('level') : 'info';
  const select = h('select', {id: 'log-level', onchange: () => {
    history.replaceState(null, '', `/ui/logs?level=${select.value}`);
    stream(select.value);
  }}, LEVELS.map((l) => h('option', {value: l, selected: l === initial}, l)));
  let paused = false;
  const pause = h('button', {type: 'button', class: 'button', 'aria-pressed': 'false', onclick: () => {
    paused = !paused;
    pause.setAttribute('aria-pressed', String(paused));
    pause.textContent = paused ? 'Resume scrolling' : 'Pause scrolling';
  }}, 'Pause scrolling');
  const clear = h('button', {type: 'button', class: 'button', onclick: () => out.replaceChildren()}, 'Clear');
  const state = h('p', {class: 'muted', role: 'status'}, 'Connecting…');
  // role=log, but not announced line by line: a busy agent would flood a screen reader.
  const out = h('pre', {class: 'log', id: 'log-lines', role: 'log', 'aria-live': 'off', tabindex: '0',
    'aria-label': 'Agent log lines'});
  ctx.main.append(
    h('div', {class: 'page-head'}, h('h1', {tabindex: '-1'}, 'Logs'), state),
    h('div', {class: 'toolbar'}, h('label', {for: 'log-level'}, 'Level'), select, pause, clear),
    out);

  const add = (text) => {
    const lines = text.split('\n').filter((l) => l);
    for (const line of lines) {
      const m = line.match(/\[(TRACE|DEBUG|INFO|WARN|ERROR)\]/);
      out.append(h('span', {class: `log-line ${m ? 'lv-' + m[1].toLowerCase() : ''}`}, line + '\n'));
    }
    while (out.childElementCount > MAX_LINES) out.firstElementChild.remove();
    if (!paused) out.scrollTop = out.scrollHeight;
  };

  let current = null;
  async function stream(level) {
    current?.abort();
    const mine = new AbortController();
    current = mine;
    ctx.signal.addEventListener('abort', () => mine.abort(), {once: true});
    state.textContent = 'Connecting…';
    try {
      const res = await fetch(`/v1/agent/monitor?loglevel=${level}`, {signal: mine.signal, headers: apiHeaders()});
      if (!res.ok) throw new Error((await res.text()) || `HTTP ${res.status}`);
      state.textContent = `Streaming at ${level} and above`;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let partial = '';
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        partial += value;
        const cut = partial.lastIndexOf('\n');
        if (cut >= 0) {
          add(partial.slice(0, cut));
          partial = partial.slice(cut + 1);
        }
      }
      state.textContent = 'The agent closed the stream.';
    } catch (err) {
      if (!mine.signal.aborted) state.textContent = `Log stream failed: ${err.message}`;
    }
  }
  stream(initial);
}
