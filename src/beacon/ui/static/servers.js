// The cluster's servers and leader. These endpoints cannot block, so the view polls them while open.

import {poll, request} from './api.js';
import {h, replace} from './dom.js';

const MEMBER_STATUS = {0: 'none', 1: 'alive', 2: 'leaving', 3: 'left', 4: 'failed'};

export function serversView(ctx) {
  ctx.title('Servers');
  const region = h('div', {class: 'region', id: 'servers-region'}, h('p', {class: 'muted'}, 'Loading…'));
  ctx.main.append(h('div', {class: 'page-head'}, h('h1', {tabindex: '-1'}, 'Servers'),
    h('p', {class: 'muted'}, 'Refreshed every 5 seconds')), region);

  const load = async () => {
    const [leader, peers, raft, members] = await Promise.all([
      request('GET', '/v1/status/leader', {signal: ctx.signal}),
      request('GET', '/v1/status/peers', {signal: ctx.signal}),
      request('GET', '/v1/operator/raft/configuration', {signal: ctx.signal}).catch((err) => ({error: err.message})),
      request('GET', '/v1/agent/members', {signal: ctx.signal}),
    ]);
    return {leader, peers, raft, members};
  };

  poll(load, ({leader, peers, raft, members}) => {
    const servers = raft.Servers || [];
    replace(region,
      h('section', {class: 'card leader', 'aria-labelledby': 'leader-title'},
        h('h2', {id: 'leader-title'}, 'Leader'),
        leader ? h('p', {class: 'big', id: 'leader-address'}, h('span', {class: 'badge status-passing'}, h('span', {'aria-hidden': 'true'}, '★ '), 'leader'), ' ', leader)
          : h('p', {class: 'error', role: 'alert'}, 'No cluster leader')),
      h('h2', {}, 'Raft configuration'),
      raft.error ? h('p', {class: 'error'}, raft.error) : h('table', {id: 'raft-servers'},
        h('caption', {class: 'visually-hidden'}, 'Raft servers'),
        h('thead', {}, h('tr', {}, ['Node', 'Address', 'Role', 'Voter', 'ID'].map((t) => h('th', {scope: 'col'}, t)))),
        h('tbody', {}, servers.map((s) => h('tr', {'data-server': s.Node},
          h('th', {scope: 'row'}, s.Node),
          h('td', {}, s.Address),
          h('td', {}, s.Leader ? h('span', {class: 'badge status-passing'}, 'leader') : 'follower'),
          h('td', {}, s.Voter ? 'yes' : 'no'),
          h('td', {}, h('code', {}, s.ID)))))),
      h('h2', {}, 'Peers'),
      h('ul', {class: 'plain', id: 'peers'}, peers.map((p) => h('li', {}, h('code', {}, p)))),
      h('h2', {}, 'Members'),
      h('table', {id: 'members'},
        h('caption', {class: 'visually-hidden'}, 'Cluster members'),
        h('thead', {}, h('tr', {}, ['Name', 'Address', 'Status', 'Role', 'Datacenter'].map((t) => h('th', {scope: 'col'}, t)))),
        h('tbody', {}, members.map((m) => {
          const status = MEMBER_STATUS[m.Status] || String(m.Status);
          return h('tr', {},
            h('th', {scope: 'row'}, m.Name),
            h('td', {}, `${m.Addr}:${m.Port}`),
            h('td', {}, h('span', {class: `badge ${status === 'alive' ? 'status-passing' : 'status-critical'}`}, status)),
            h('td', {}, m.Tags?.role === 'consul' ? 'server' : 'client'),
            h('td', {}, m.Tags?.dc || ''));
        }))));
  }, {signal: ctx.signal});
}
