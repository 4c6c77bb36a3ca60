// The shell: client-side routing under /ui/, the header, and one live view at a time.

import {getToken, onConnection, request, setToken} from './api.js';
import {h} from './dom.js';
import {kvView} from './kv.js';
import {logsView} from './logs.js';
import {serversView} from './servers.js';
import {nodesView, nodeView, servicesView, serviceView} from './catalog.js';

const routes = [
  [/^\/ui\/?$/, 'services', () => navigate('/ui/services', {replace: true})],
  [/^\/ui\/services\/?$/, 'services', servicesView],
  [/^\/ui\/services\/(.+)$/, 'services', serviceView],
  [/^\/ui\/nodes\/?$/, 'nodes', nodesView],
  [/^\/ui\/nodes\/(.+)$/, 'nodes', nodeView],
  [/^\/ui\/kv(?:\/(.*))?$/, 'kv', kvView],
  [/^\/ui\/servers\/?$/, 'servers', serversView],
  [/^\/ui\/logs\/?$/, 'logs', logsView],
];

let current = null;  // AbortController of the view on screen: stops its blocking queries

export function navigate(path, {replace = false} = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  render({focus: !replace});
}

function notFound(ctx) {
  ctx.title('Not found');
  ctx.main.append(h('h1', {tabindex: '-1'}, 'Page not found'),
    h('p', {}, 'Nothing lives at this address. ', h('a', {href: '/ui/services'}, 'Go to services'), '.'));
}

function render({focus = false} = {}) {
  current?.abort();
  current = new AbortController();
  const main = document.getElementById('main');
  main.replaceChildren();
  const path = location.pathname;
  let view = notFound;
  let section = null;
  let params = [];
  for (const [pattern, name, fn] of routes) {
    const m = path.match(pattern);
    if (m) {
      view = fn;
      section = name;
      params = m.slice(1).map((p) => (p == null ? '' : decodeURIComponent(p)));
      break;
    }
  }
  for (const a of document.querySelectorAll('nav a[data-section]')) {
    if (a.dataset.section === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const ctx = {
    main,
    params,
    signal: current.signal,
    navigate,
    title: (t) => { document.title = `${t} · Beacon`; },
  };
  view(ctx);
  if (focus) {
    // Move focus to the new page's heading so screen readers announce it and Tab starts there.
    const heading = main.querySelector('h1');
    (heading || main).focus();
  }
}

document.addEventListener('click', (event) => {
  const a = event.target.closest('a[href]');
  if (!a || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey || a.target) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/ui/') || url.pathname.startsWith('/ui/assets/')) return;
  event.preventDefault();
  if (url.pathname + url.search === location.pathname + location.search) return;
  navigate(url.pathname + url.search);
});

window.addEventListener('popstate', () => render({focus: true}));

onConnection((ok) => {
  const el = document.getElementById('conn');
  el.className = ok ? 'conn ok' : 'conn lost';
  el.textContent = ok ? 'Live' : 'Connection lost: retrying…';
});

function showWhere() {
  request('GET', '/v1/agent/self').then((self) => {
    document.getElementById('where').textContent = `${self.Config.Datacenter} · ${self.Config.NodeName}`;
  }).catch(() => {});
}

function showAuth() {
  const button = document.getElementById('auth');
  button.hidden = !getToken();
}

// A denied request (ACLs with default_policy deny, or a token without the right): ask for a token
// in place of the view; after logging in the same view is drawn again with it.
function login(text) {
  if (document.getElementById('login')) return;
  current?.abort();
  const main = document.getElementById('main');
  const input = h('input', {id: 'login-token', type: 'password', autocomplete: 'off', required: true});
  const form = h('form', {id: 'login', class: 'card', onsubmit: (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    showAuth();
    showWhere();
    render({focus: true});
  }},
  h('p', {}, getToken() ? 'This token may not see this page.' : 'This agent needs an ACL token.',
    ' ', h('span', {class: 'muted small'}, text || '')),
  h('label', {for: 'login-token'}, 'ACL token (SecretID)'), ' ', input, ' ',
  h('button', {type: 'submit', class: 'button'}, 'Log in'));
  main.replaceChildren(h('h1', {tabindex: '-1'}, 'Log in'), form);
  document.title = 'Log in · Beacon';
  input.focus();
}

window.addEventListener('beacon:denied', (event) => login(event.detail.text));

document.getElementById('auth').addEventListener('click', () => {
  setToken('');
  showAuth();
  document.getElementById('where').textContent = '';
  render({focus: true});
  showWhere();  // lists answer "nothing" to anonymous; the agent's own endpoint says "denied"
});

showAuth();
showWhere();
render();
