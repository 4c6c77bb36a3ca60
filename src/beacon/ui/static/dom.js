// Tiny DOM helpers. Data is always inserted as text (never as markup), so nothing the API returns
// can inject HTML into the page.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'value') el.value = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

// Replace a region's content while keeping keyboard focus on the "same" element when it is redrawn
// (a link with the same href, or an element with the same data-key), so live updates never throw a
// keyboard user back to the top of the page.
export function replace(region, ...children) {
  const active = document.activeElement;
  let key = null;
  if (active && region.contains(active)) {
    key = active.dataset.key ? `[data-key="${CSS.escape(active.dataset.key)}"]`
        : active.getAttribute('href') ? `[href="${CSS.escape(active.getAttribute('href'))}"]` : null;
  }
  region.replaceChildren();
  append(region, children);
  if (key) {
    const again = region.querySelector(key);
    if (again) again.focus({preventScroll: true});
  }
}

export function announce(text) {
  const el = document.getElementById('announcer');
  if (!el) return;
  el.textContent = '';
  // A fresh text node after a tick makes screen readers announce repeated messages too.
  setTimeout(() => { el.textContent = text; }, 50);
}

export function plural(n, one, many) {
  return `${n} ${n === 1 ? one : (many || one + 's')}`;
}
