// DOM and formatting helpers: elements are built with text nodes only (never innerHTML),
// so nothing a task prints can become markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'value') el.value = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

// Replaces el's children (arrays flattened, null/undefined/false left out).
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Runs fn at most once per `ms` (the first call soon, later ones folded into one).
export function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  const run = () => {
    timer = null;
    last = Date.now();
    fn();
  };
  const trigger = () => {
    if (timer) return;
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  };
  trigger.cancel = () => {
    clearTimeout(timer);
    timer = null;
  };
  return trigger;
}

export const TERMINAL = ['succeeded', 'failed', 'cancelled', 'expired'];
export const STATES = ['waiting', 'scheduled', 'queued', 'running', ...TERMINAL];
export const PRIORITIES = ['critical', 'high', 'normal', 'low', 'background'];

export function time(value) {
  if (!value) return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString(undefined, { hour12: false });
}

export function ms(value) {
  if (value === undefined || value === null) return '';
  if (value < 1000) return `${Math.round(value)} ms`;
  if (value < 60000) return `${(value / 1000).toFixed(value < 10000 ? 2 : 1)} s`;
  return `${Math.floor(value / 60000)} min ${Math.round((value % 60000) / 1000)} s`;
}

export function bytes(value) {
  if (value === undefined || value === null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = value;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

export function count(value) {
  return value === undefined || value === null ? '' : Number(value).toLocaleString('en-US');
}

export function shortModule(id) {
  return id && id.startsWith('sha256:') ? id.slice(7, 19) : id || '';
}

// What an attempt's outcome looks like in a table: `ok`, `exit 42`, `trap (unreachable)`.
export function outcome(attempt) {
  if (!attempt) return '';
  if (attempt.outcome === 'exit' && attempt.exit_code !== undefined) return `exit ${attempt.exit_code}`;
  if (attempt.outcome === 'trap' && attempt.trap) return `trap (${attempt.trap})`;
  return attempt.outcome;
}

export function duration(task) {
  if (!task.started_at) return '';
  const end = task.finished_at ? new Date(task.finished_at) : new Date();
  return ms(end - new Date(task.started_at));
}

export function badge(state) {
  return h('span', { class: `badge s-${state}` }, state);
}

export function errorBox(error) {
  return h('p', { class: 'error', role: 'alert' }, error.code ? `Error ${error.code}: ${error.message}` : String(error.message || error));
}

// A fraction in 0..1 from Task.progress.done (a percentage when above 1).
export function fraction(done) {
  const n = Number(done);
  if (!Number.isFinite(n) || n < 0) return 0;
  return n > 1 ? Math.min(n / 100, 1) : n;
}
