// The task list: task.list pages (newest first, `state` filtered by the server; `module`
// and `label` filtered here on the loaded pages), kept live from task events.

import { rpc } from './api.js';
import { STATES, badge, count, duration, h, outcome, shortModule, throttle, time, fill } from './dom.js';

const PAGE = 50;
const NEW_PER_TICK = 20;

function moduleMatches(task, wanted, names) {
  if (!wanted) return true;
  const name = names.get(task.module);
  return task.module === wanted || name === wanted || task.module.startsWith(wanted) || task.module.startsWith(`sha256:${wanted}`);
}

function labelMatches(task, wanted) {
  if (!wanted) return true;
  const at = wanted.indexOf('=');
  const labels = task.labels || {};
  if (at < 0) return Object.hasOwn(labels, wanted);
  return labels[wanted.slice(0, at)] === wanted.slice(at + 1);
}

export async function tasksPage(ctx) {
  const state = ctx.params.get('state') || '';
  const module = ctx.params.get('module') || '';
  const label = ctx.params.get('label') || '';
  const names = await ctx.modules().catch(() => new Map());
  const tasks = new Map();
  let cursor = null;
  let unseen = 0;
  const pending = new Set();

  const matches = (t) => (!state || t.state === state) && moduleMatches(t, module, names) && labelMatches(t, label);

  const form = h(
    'form',
    {
      class: 'filters',
      onsubmit: (event) => {
        event.preventDefault();
        const query = new URLSearchParams();
        for (const [key, value] of new FormData(event.target)) if (value) query.set(key, value);
        const qs = query.toString();
        ctx.navigate(`/ui/tasks${qs ? `?${qs}` : ''}`);
      },
    },
    h('label', {}, 'State ', h('select', { name: 'state' }, h('option', { value: '' }, 'any'), STATES.map((s) => h('option', { value: s, selected: s === state }, s)))),
    h('label', {}, 'Module ', h('input', { name: 'module', value: module, placeholder: 'name or sha256 prefix', size: 18 })),
    h('label', {}, 'Label ', h('input', { name: 'label', value: label, placeholder: 'key=value or key', size: 18 })),
    h('button', { type: 'submit' }, 'Filter'),
  );
  const note = h('p', { class: 'muted' });
  const body = h('tbody');
  const more = h('button', { type: 'button', onclick: () => page().catch(ctx.failed) }, 'Load more');
  const banner = h('p', { class: 'notice', hidden: true });
  fill(ctx.root,
    h('h1', {}, 'Tasks'),
    form,
    note,
    banner,
    h('table', { class: 'grid', id: 'tasks' }, h('thead', {}, h('tr', {}, ['id', 'state', 'priority', 'module', 'labels', 'attempts', 'outcome', 'created', 'duration'].map((c) => h('th', {}, c)))), body),
    more,
  );

  function row(task) {
    const last = task.attempts?.[task.attempts.length - 1];
    const name = names.get(task.module);
    return h(
      'tr',
      { 'data-id': task.id },
      h('td', { class: 'mono' }, h('a', { href: `/ui/tasks/${encodeURIComponent(task.id)}` }, task.id)),
      h('td', {}, badge(task.state)),
      h('td', {}, task.priority),
      h('td', { title: task.module }, name || h('span', { class: 'mono' }, shortModule(task.module))),
      h('td', {}, Object.entries(task.labels || {}).map(([k, v]) => h('span', { class: 'chip' }, `${k}=${v}`))),
      h('td', { class: 'num' }, count(task.attempts?.length || 0)),
      h('td', {}, outcome(last)),
      h('td', {}, time(task.created_at)),
      h('td', { class: 'num' }, duration(task)),
    );
  }

  function draw() {
    if (!ctx.alive()) return;
    const shown = [...tasks.values()].filter(matches).sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
    fill(body, shown.map(row));
    if (!shown.length) body.append(h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'No tasks match.')));
    const clientSide = module || label ? ' Module and label filter the loaded pages here in the page (task.list filters only by state), so load more to search older tasks.' : '';
    note.textContent = `${shown.length} shown of ${tasks.size} loaded, newest first.${clientSide}`;
    more.hidden = !cursor;
    banner.hidden = unseen === 0;
    banner.textContent = `${unseen} more new tasks arrived; reload the page to see them all.`;
  }
  const redraw = throttle(draw, 250);

  async function page() {
    const params = { limit: PAGE };
    if (state) params.state = state;
    if (cursor) params.cursor = cursor;
    const result = await rpc('task.list', params);
    for (const task of result.tasks) tasks.set(task.id, task);
    cursor = result.next_cursor || null;
    draw();
  }

  // Tasks that events name but the page does not hold yet: read a few at a time.
  const fetchNew = throttle(async () => {
    const ids = [...pending].slice(0, NEW_PER_TICK);
    for (const id of ids) pending.delete(id);
    unseen += pending.size;
    pending.clear();
    const fresh = await Promise.all(ids.map((id) => rpc('task.get', { id }).catch(() => null)));
    for (const task of fresh) {
      if (task && !tasks.has(task.id)) tasks.set(task.id, task);
    }
    redraw();
  }, 1000);

  const off = ctx.live.on((event) => {
    if (event.dropped !== undefined) {
      if (event.dropped > 0 || event.reconnected) {
        // Events were lost: read the first page again.
        cursor = null;
        page().catch(() => {});
      }
      return;
    }
    const task = tasks.get(event.id);
    if (task) {
      task.state = event.state;
      if (event.attempt) task.attempts = [...(task.attempts || []), event.attempt];
      if (event.state === 'running' && !task.started_at) task.started_at = new Date().toISOString();
      if (['succeeded', 'failed', 'cancelled', 'expired'].includes(event.state) && !task.finished_at) task.finished_at = new Date().toISOString();
      redraw();
    } else {
      pending.add(event.id);
      fetchNew();
    }
  });
  await page();
  return {
    dispose() {
      off();
      redraw.cancel();
      fetchNew.cancel();
    },
  };
}
