// Talking to the agent's Consul-compatible HTTP API, and keeping views live with blocking queries.

export class ApiError extends Error {
  constructor(status, text) {
    super(text || `HTTP ${status}`);
    this.status = status;
  }
}

// The ACL token the user logged in with lives in this tab's sessionStorage only (gone when the tab
// closes) and goes out as X-Consul-Token. A 403 raises 'beacon:denied' so the shell asks for one.
const TOKEN_KEY = 'beacon.token';

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function apiHeaders() {
  const headers = {'Accept': 'application/json'};
  const token = getToken();
  if (token) headers['X-Consul-Token'] = token;
  return headers;
}

export function denied(status, text) {
  if (status === 403) window.dispatchEvent(new CustomEvent('beacon:denied', {detail: {text}}));
}

export async function request(method, path, {body, signal} = {}) {
  const res = await fetch(path, {method, body, signal, headers: apiHeaders()});
  const text = await res.text();
  if (!res.ok) {
    denied(res.status, text.trim());
    throw new ApiError(res.status, text.trim());
  }
  return text ? JSON.parse(text) : null;
}

const listeners = new Set();
let healthy = true;

export function onConnection(fn) { listeners.add(fn); fn(healthy); }

function setHealthy(value) {
  if (value === healthy) return;
  healthy = value;
  for (const fn of listeners) fn(value);
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, {once: true});
});

// Follow a blocking endpoint: call onData(data) at once, then each time X-Consul-Index moves.
// HashiCorp's client rules: an index that goes backwards resets to 0; never send an index below 1;
// back off after errors. A 404 gives onData(null) (a deleted key, an unknown node).
export function watch(path, onData, {signal, wait = '60s', onError} = {}) {
  (async () => {
    let index = 0;
    let failures = 0;
    while (!signal?.aborted) {
      const sep = path.includes('?') ? '&' : '?';
      const url = index > 0 ? `${path}${sep}index=${index}&wait=${wait}` : path;
      let res;
      try {
        res = await fetch(url, {signal, headers: apiHeaders()});
      } catch (err) {
        if (signal?.aborted) return;
        failures++;
        setHealthy(false);
        await sleep(Math.min(500 * 2 ** failures, 10000), signal);
        continue;
      }
      const next = Number(res.headers.get('X-Consul-Index') || 0);
      if (!res.ok && res.status !== 404) {
        const text = (await res.text()).trim();
        if (signal?.aborted) return;
        if (res.status === 403) {  // retrying cannot help: ask for a token; the view redraws after
          denied(res.status, text);
          onError?.(new ApiError(res.status, text));
          return;
        }
        failures++;
        onError?.(new ApiError(res.status, text));
        await sleep(Math.min(500 * 2 ** failures, 10000), signal);
        continue;
      }
      const text = await res.text().catch(() => '');
      if (signal?.aborted) return;
      failures = 0;
      setHealthy(true);
      const changed = index === 0 || next !== index;
      index = next < index ? 0 : Math.max(1, next);
      if (changed) onData(res.status === 404 || !text ? null : JSON.parse(text));
      if (!next) await sleep(1000, signal);  // not a blocking endpoint: don't spin
    }
  })();
}

// For endpoints that cannot block (status, raft configuration, members): poll while the view is open.
export function poll(load, onData, {signal, every = 5000} = {}) {
  (async () => {
    while (!signal?.aborted) {
      try {
        onData(await load());
        setHealthy(true);
      } catch (err) {
        if (signal?.aborted) return;
        setHealthy(false);
      }
      await sleep(every, signal);
    }
  })();
}

// KV keys may hold any character: encode each path segment, keep the slashes.
export function encodeKey(key) {
  return key.split('/').map(encodeURIComponent).join('/');
}

export function decodeValue(b64) {
  if (b64 == null) return {text: '', binary: false};
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  try {
    return {text: new TextDecoder('utf-8', {fatal: true}).decode(bytes), binary: false};
  } catch {
    return {text: b64, binary: true};
  }
}
