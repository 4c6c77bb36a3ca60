// The KV browser: folders (key prefixes ending in "/"), keys with a value editor, create and delete.
// Writes use check-and-set with the ModifyIndex the page showed, so an edit never silently
// overwrites a change made elsewhere.

import {decodeValue, encodeKey, request, watch} from './api.js';
import {announce, h, plural, replace} from './dom.js';

const kvHref = (key) => `/ui/kv/${encodeKey(key)}`;
const kvApi = (key) => `/v1/kv/${encodeKey(key)}`;

function parentOf(key) {
  const trimmed = key.endsWith('/') ? key.slice(0, -1) : key;
  const at = trimmed.lastIndexOf('/');
  return at < 0 ? '' : trimmed.slice(0, at + 1);
}

function crumbs(key) {
  const parts = [h('a', {href: '/ui/kv/'}, 'Key/Value')];
  let prefix = '';
  const segments = key.split('/');
  segments.slice(0, -1).forEach((seg) => {
    prefix += seg + '/';
    parts.push(' / ', h('a', {href: kvHref(prefix)}, seg));
  });
  return h('nav', {'aria-label': 'Breadcrumb', class: 'crumbs'}, parts, ' /');
}

export function confirmDialog(message, action) {
  return new Promise((resolve) => {
    const cancel = h('button', {type: 'button', class: 'button', value: 'cancel'}, 'Cancel');
    const ok = h('button', {type: 'button', class: 'button danger', value: 'ok'}, action);
    const dialog = h('dialog', {class: 'dialog', 'aria-labelledby': 'dialog-title'},
      h('h2', {id: 'dialog-title'}, message),
      h('div', {class: 'actions'}, cancel, ok));
    const done = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
    cancel.addEventListener('click', () => done(false));
    ok.addEventListener('click', () => done(true));
    dialog.addEventListener('cancel', (e) => { e.preventDefault(); done(false); });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

function message(el, text, kind) {
  el.className = `message ${kind}`;
  el.textContent = text;
}

export function kvView(ctx) {
  const key = ctx.params[0] || '';
  if (key === '' || key.endsWith('/')) folderView(ctx, key);
  else keyView(ctx, key);
}

function folderView(ctx, prefix) {
  ctx.title(prefix || 'Key/Value');
  const region = h('div', {class: 'region', id: 'kv-list'}, h('p', {class: 'muted'}, 'Loading…'));
  const count = h('p', {class: 'muted'});
  const status = h('p', {class: 'message', role: 'status'});
  const nameInput = h('input', {id: 'kv-new-key', name: 'key', required: true, autocomplete: 'off',
    'aria-describedby': 'kv-new-key-hint', spellcheck: 'false'});
  const valueInput = h('textarea', {id: 'kv-new-value', name: 'value', rows: '4', spellcheck: 'false'});
  const form = h('form', {class: 'card form', 'aria-labelledby': 'kv-create-title'},
    h('h2', {id: 'kv-create-title'}, 'Create'),
    h('label', {for: 'kv-new-key'}, 'Key or folder name'),
    h('div', {class: 'prefixed'}, prefix ? h('span', {class: 'prefix', 'aria-hidden': 'true'}, prefix) : null, nameInput),
    h('p', {id: 'kv-new-key-hint', class: 'hint'}, `Created under ${prefix || 'the root'}. End the name with / to create a folder.`),
    h('label', {for: 'kv-new-value'}, 'Value'),
    valueInput,
    h('div', {class: 'actions'}, h('button', {type: 'submit', class: 'button primary'}, 'Create')),
    status);

  const head = [h('h1', {tabindex: '-1'}, prefix ? prefix.slice(0, -1).split('/').pop() + '/' : 'Key/Value'), count];
  if (prefix) {
    head.push(h('button', {type: 'button', class: 'button danger', onclick: async () => {
      if (!await confirmDialog(`Delete the folder ${prefix} and every key in it?`, 'Delete folder')) return;
      try {
        await request('DELETE', `${kvApi(prefix)}?recurse`);
        announce(`Deleted ${prefix}`);
        ctx.navigate(kvHref(parentOf(prefix)));
      } catch (err) { message(status, `Delete failed: ${err.message}`, 'error'); }
    }}, 'Delete folder'));
  }
  if (prefix) ctx.main.append(crumbs(prefix));
  ctx.main.append(h('div', {class: 'page-head'}, head), region, form);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = nameInput.value.trim().replace(/^\/+/, '');
    if (!name) { message(status, 'Give the key a name.', 'error'); nameInput.focus(); return; }
    const full = prefix + name;
    try {
      const folder = full.endsWith('/');
      const created = await request('PUT', `${kvApi(full)}?cas=0`, {body: folder ? '' : valueInput.value});
      if (created === false) {
        message(status, `${full} already exists.`, 'error');
        nameInput.focus();
        return;
      }
      message(status, `Created ${full}.`, 'ok');
      nameInput.value = '';
      valueInput.value = '';
    } catch (err) {
      message(status, `Create failed: ${err.message}`, 'error');
    }
  });

  watch(`${kvApi(prefix)}?keys&separator=/`, (keys) => {
    keys = (keys || []).filter((k) => k !== prefix);
    count.textContent = plural(keys.length, 'entry', 'entries');
    if (!keys.length) {
      replace(region, h('p', {class: 'empty'}, prefix ? 'This folder is empty.' : 'The KV store is empty.'));
      return;
    }
    replace(region, h('table', {},
      h('caption', {class: 'visually-hidden'}, `Keys in ${prefix || 'the root'}`),
      h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Name'), h('th', {scope: 'col'}, 'Kind'))),
      h('tbody', {}, keys.map((k) => {
        const folder = k.endsWith('/');
        return h('tr', {'data-key-row': k},
          h('th', {scope: 'row'}, h('a', {href: kvHref(k), class: folder ? 'kv-folder' : 'kv-key'}, k.slice(prefix.length))),
          h('td', {}, folder ? 'Folder' : 'Key'));
      }))));
  }, {signal: ctx.signal});
}

function keyView(ctx, key) {
  ctx.title(key);
  let entry = null;
  let dirty = false;
  const valueInput = h('textarea', {id: 'kv-value', name: 'value', rows: '10', spellcheck: 'false'});
  const status = h('p', {class: 'message', role: 'status', id: 'kv-status'});
  const facts = h('dl', {class: 'facts'});
  const notice = h('div', {class: 'notice', hidden: true, role: 'alert'});
  const save = h('button', {type: 'submit', class: 'button primary'}, 'Save');
  const del = h('button', {type: 'button', class: 'button danger'}, 'Delete');
  const form = h('form', {class: 'card form', 'aria-label': `Edit ${key}`},
    h('label', {for: 'kv-value', id: 'kv-value-label'}, 'Value'),
    valueInput,
    notice,
    h('div', {class: 'actions'}, save, del),
    status);
  const body = h('div', {class: 'region', id: 'kv-entry'}, h('p', {class: 'muted'}, 'Loading…'));
  ctx.main.append(crumbs(key), h('div', {class: 'page-head'}, h('h1', {tabindex: '-1'}, key.split('/').pop())),
    h('p', {class: 'muted'}, h('code', {}, key)), body);

  valueInput.addEventListener('input', () => { dirty = true; });

  function show(next) {
    const first = entry === null;
    entry = next;
    if (!entry) {
      replace(body, h('p', {class: 'empty'}, 'This key does not exist (it may have been deleted). ',
        h('a', {href: kvHref(parentOf(key))}, 'Back to the folder'), '.'));
      return;
    }
    if (first || !body.contains(form)) replace(body, form, h('h2', {}, 'Details'), facts);
    const value = decodeValue(entry.Value);
    if (dirty && value.text === valueInput.value) dirty = false;  // our own save coming back
    if (!dirty) {
      valueInput.value = value.text;
      notice.hidden = true;
    } else {
      notice.hidden = false;
      notice.replaceChildren(`This key changed elsewhere (index ${entry.ModifyIndex}) while you were editing. `,
        h('button', {type: 'button', class: 'button', onclick: () => { dirty = false; show(entry); valueInput.focus(); }},
          'Discard my edit and load it'));
    }
    valueInput.readOnly = value.binary;
    save.disabled = value.binary;
    facts.replaceChildren(
      ...[['Flags', entry.Flags], ['Create index', entry.CreateIndex], ['Modify index', entry.ModifyIndex],
        ['Lock index', entry.LockIndex], ['Session', entry.Session || '—'],
        ['Encoding', value.binary ? 'binary (shown as base64, read-only)' : 'UTF-8 text']]
        .flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]));
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!entry) return;
    try {
      const ok = await request('PUT', `${kvApi(key)}?cas=${entry.ModifyIndex}`, {body: valueInput.value});
      if (ok === false) {
        message(status, 'Not saved: the key changed elsewhere since it was loaded.', 'error');
        return;
      }
      dirty = false;
      notice.hidden = true;
      message(status, 'Saved.', 'ok');
    } catch (err) {
      message(status, `Save failed: ${err.message}`, 'error');
    }
  });

  del.addEventListener('click', async () => {
    if (!entry || !await confirmDialog(`Delete the key ${key}?`, 'Delete')) { del.focus(); return; }
    try {
      const ok = await request('DELETE', `${kvApi(key)}?cas=${entry.ModifyIndex}`);
      if (ok === false) { message(status, 'Not deleted: the key changed elsewhere.', 'error'); return; }
      announce(`Deleted ${key}`);
      ctx.navigate(kvHref(parentOf(key)));
    } catch (err) {
      message(status, `Delete failed: ${err.message}`, 'error');
    }
  });

  watch(kvApi(key), (rows) => show(rows && rows.length ? rows[0] : null), {signal: ctx.signal});
}
