// Services and nodes: lists with health counts, and detail pages with every check's status and output.

import {encodeKey, watch} from './api.js';
import {h, plural, replace} from './dom.js';

const STATUS_MARK = {passing: '✓', warning: '!', critical: '✕'};

function statusBadge(status) {
  return h('span', {class: `badge status-${status}`}, h('span', {'aria-hidden': 'true'}, STATUS_MARK[status] || '?'), ' ', status);
}

function countBadges(passing, warning, critical) {
  const out = [];
  if (passing) out.push(h('span', {class: 'badge status-passing'}, h('span', {'aria-hidden': 'true'}, '✓ '), `${passing} passing`));
  if (warning) out.push(h('span', {class: 'badge status-warning'}, h('span', {'aria-hidden': 'true'}, '! '), `${warning} warning`));
  if (critical) out.push(h('span', {class: 'badge status-critical'}, h('span', {'aria-hidden': 'true'}, '✕ '), `${critical} critical`));
  if (!out.length) out.push(h('span', {class: 'muted'}, 'no checks'));
  return h('span', {class: 'badges'}, out);
}

function worst(checks) {
  if (checks.some((c) => c.Status === 'critical')) return 'critical';
  if (checks.some((c) => c.Status === 'warning')) return 'warning';
  return 'passing';
}

function tagList(tags) {
  if (!tags || !tags.length) return h('span', {class: 'muted'}, '—');
  return h('ul', {class: 'tags', 'aria-label': 'Tags'}, tags.map((t) => h('li', {class: 'tag'}, t)));
}

function table(caption, headers, rows, {empty = 'Nothing here yet.'} = {}) {
  if (!rows.length) return h('p', {class: 'empty'}, empty);
  return h('table', {},
    h('caption', {class: 'visually-hidden'}, caption),
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', {scope: 'col'}, t)))),
    h('tbody', {}, rows));
}

function loading() { return h('p', {class: 'muted'}, 'Loading…'); }

function errorBox(err) {
  return h('p', {class: 'error', role: 'alert'}, `Could not load: ${err.message}`);
}

export function serviceHref(name) { return `/ui/services/${encodeURIComponent(name)}`; }
export function nodeHref(name) { return `/ui/nodes/${encodeURIComponent(name)}`; }

// ------------------------------------------------------------------------------------------- services

export function servicesView(ctx) {
  ctx.title('Services');
  let services = null;
  const region = h('div', {class: 'region', id: 'services-region'}, loading());
  const search = h('input', {type: 'search', id: 'service-filter', autocomplete: 'off',
    placeholder: 'name or tag', oninput: () => draw()});
  const count = h('p', {class: 'muted', id: 'services-count'});
  ctx.main.append(
    h('div', {class: 'page-head'}, h('h1', {tabindex: '-1'}, 'Services'), count),
    h('div', {class: 'toolbar'}, h('label', {for: 'service-filter'}, 'Filter services'), search),
    region);

  function draw() {
    if (services === null) return;
    const q = search.value.trim().toLowerCase();
    const shown = services.filter((s) => !q || s.Name.toLowerCase().includes(q)
      || (s.Tags || []).some((t) => t.toLowerCase().includes(q)));
    count.textContent = q ? `${shown.length} of ${plural(services.length, 'service')}` : plural(services.length, 'service');
    replace(region, table('Services', ['Service', 'Health', 'Instances', 'Tags'], shown.map((s) =>
      h('tr', {'data-service': s.Name},
        h('th', {scope: 'row'}, h('a', {href: serviceHref(s.Name)}, s.Name)),
        h('td', {}, countBadges(s.ChecksPassing, s.ChecksWarning, s.ChecksCritical)),
        h('td', {class: 'num'}, String(s.InstanceCount)),
        h('td', {}, tagList(s.Tags)))),
    {empty: q ? 'No service matches this filter.' : 'No services are registered.'}));
  }

  watch('/v1/internal/ui/services', (data) => { services = data || []; draw(); },
    {signal: ctx.signal, onError: (err) => replace(region, errorBox(err))});
}

export function serviceView(ctx) {
  const [name] = ctx.params;
  ctx.title(name);
  const summary = h('p', {class: 'muted'});
  const region = h('div', {class: 'region', id: 'instances'}, loading());
  ctx.main.append(
    h('nav', {'aria-label': 'Breadcrumb', class: 'crumbs'}, h('a', {href: '/ui/services'}, 'Services'), ' / '),
    h('div', {class: 'page-head'}, h('h1', {tabindex: '-1'}, name), summary),
    region);

  watch(`/v1/health/service/${encodeURIComponent(name)}`, (rows) => {
    rows = rows || [];
    const checks = rows.flatMap((r) => r.Checks);
    summary.replaceChildren();
    summary.append(plural(rows.length, 'instance'), ' · ',
      countBadges(...['passing', 'warning', 'critical'].map((s) => checks.filter((c) => c.Status === s).length)));
    if (!rows.length) {
      replace(region, h('p', {class: 'empty'}, 'This service has no instances (it may have been deregistered).'));
      return;
    }
    replace(region, rows.map((r) => instanceSection(r)));
  }, {signal: ctx.signal, onError: (err) => replace(region, errorBox(err))});
}

function instanceSection({Node: node, Service: svc, Checks: checks}) {
  const address = svc.Address || node.Address;
  const id = `instance-${svc.ID}-${node.Node}`.replace(/[^A-Za-z0-9_-]/g, '_');
  return h('section', {class: `card instance status-edge-${worst(checks)}`, 'aria-labelledby': id, 'data-instance': svc.ID},
    h('h2', {id}, svc.ID, ' ', h('span', {class: 'muted small'}, 'on '), h('a', {href: nodeHref(node.Node)}, node.Node)),
    h('dl', {class: 'facts'},
      h('dt', {}, 'Address'), h('dd', {}, svc.Port ? `${address}:${svc.Port}` : address),
      h('dt', {}, 'Tags'), h('dd', {}, tagList(svc.Tags)),
      Object.keys(svc.Meta || {}).length ? [h('dt', {}, 'Meta'), h('dd', {}, metaList(svc.Meta))] : null),
    h('h3', {}, 'Checks'),
    checksTable(checks, `Checks of ${svc.ID}`));
}

function metaList(meta) {
  return h('ul', {class: 'tags'}, Object.entries(meta).map(([k, v]) => h('li', {class: 'tag'}, `${k}=${v}`)));
}

function checksTable(checks, caption) {
  return table(caption, ['Check', 'Status', 'Type', 'Output'], checks.map((c) =>
    h('tr', {'data-check': c.CheckID, class: `check status-row-${c.Status}`},
      h('th', {scope: 'row'}, c.Name || c.CheckID, c.Name && c.Name !== c.CheckID ? h('div', {class: 'muted small'}, c.CheckID) : null,
        c.Notes ? h('div', {class: 'small'}, c.Notes) : null),
      h('td', {}, statusBadge(c.Status)),
      h('td', {}, c.Type || (c.CheckID === 'serfHealth' ? 'serf' : '—')),
      h('td', {}, c.Output ? h('pre', {class: 'output'}, c.Output) : h('span', {class: 'muted'}, 'no output')))),
  {empty: 'No checks.'});
}

// ------------------------------------------------------------------------------------------- nodes

export function nodesView(ctx) {
  ctx.title('Nodes');
  const region = h('div', {class: 'region', id: 'nodes-region'}, loading());
  const count = h('p', {class: 'muted'});
  ctx.main.append(h('div', {class: 'page-head'}, h('h1', {tabindex: '-1'}, 'Nodes'), count), region);
  watch('/v1/internal/ui/nodes', (nodes) => {
    nodes = nodes || [];
    count.textContent = plural(nodes.length, 'node');
    replace(region, table('Nodes', ['Node', 'Address', 'Health', 'Services'], nodes.map((n) => {
      const by = (s) => n.Checks.filter((c) => c.Status === s).length;
      return h('tr', {'data-node': n.Node},
        h('th', {scope: 'row'}, h('a', {href: nodeHref(n.Node)}, n.Node)),
        h('td', {}, n.Address),
        h('td', {}, countBadges(by('passing'), by('warning'), by('critical'))),
        h('td', {}, n.Services.length
          ? h('ul', {class: 'inline-list'}, n.Services.map((s) => h('li', {}, h('a', {href: serviceHref(s.Service)}, s.ID))))
          : h('span', {class: 'muted'}, '—')));
    }), {empty: 'No nodes.'}));
  }, {signal: ctx.signal, onError: (err) => replace(region, errorBox(err))});
}

export function nodeView(ctx) {
  const [name] = ctx.params;
  ctx.title(name);
  const region = h('div', {class: 'region', id: 'node-region'}, loading());
  ctx.main.append(
    h('nav', {'aria-label': 'Breadcrumb', class: 'crumbs'}, h('a', {href: '/ui/nodes'}, 'Nodes'), ' / '),
    h('div', {class: 'page-head'}, h('h1', {tabindex: '-1'}, name)),
    region);
  watch(`/v1/internal/ui/node/${encodeKey(name)}`, (node) => {
    if (!node) {
      replace(region, h('p', {class: 'empty'}, 'This node is not in the catalog.'));
      return;
    }
    const meta = Object.entries(node.Meta || {});
    replace(region,
      h('dl', {class: 'facts card'},
        h('dt', {}, 'Address'), h('dd', {}, node.Address),
        h('dt', {}, 'Datacenter'), h('dd', {}, node.Datacenter),
        h('dt', {}, 'Node ID'), h('dd', {}, h('code', {}, node.ID || '—')),
        meta.length ? [h('dt', {}, 'Meta'), h('dd', {}, metaList(node.Meta))] : null),
      h('h2', {}, 'Checks'),
      checksTable(node.Checks, `Checks on ${node.Node}`),
      h('h2', {}, 'Services'),
      table(`Services on ${node.Node}`, ['Service', 'ID', 'Address', 'Tags'], node.Services.map((s) =>
        h('tr', {},
          h('th', {scope: 'row'}, h('a', {href: serviceHref(s.Service)}, s.Service)),
          h('td', {}, s.ID),
          h('td', {}, `${s.Address || node.Address}${s.Port ? ':' + s.Port : ''}`),
          h('td', {}, tagList(s.Tags)))), {empty: 'No services on this node.'}));
  }, {signal: ctx.signal, onError: (err) => replace(region, errorBox(err))});
}
