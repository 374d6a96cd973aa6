// Modules: module.list, each module's recent outcomes (from the newest tasks' first
// task.list page) and KPI aggregates from kpi.query when the server has it.

import { METHOD_NOT_FOUND, rpc } from './api.js';
import { bytes, count, h, throttle, time, fill } from './dom.js';

const RECENT = 500;

function outcomes(tasks, module) {
  const by = {};
  for (const t of tasks) if (t.module === module) by[t.state] = (by[t.state] || 0) + 1;
  const parts = Object.entries(by).map(([state, n]) => h('span', { class: `badge s-${state}` }, `${n} ${state}`));
  return parts.length ? parts : h('span', { class: 'muted' }, 'none');
}

async function kpis(modules) {
  const rows = [];
  for (const m of modules) {
    try {
      const result = await rpc('kpi.query', { module: m.module, group_by: 'module' });
      rows.push(...(result.rows || []));
    } catch (error) {
      if (error.code === METHOD_NOT_FOUND) return null;
      throw error;
    }
  }
  return rows;
}

export async function modulesPage(ctx) {
  const modulesBody = h('tbody');
  const kpiSection = h('section', {}, h('h2', {}, 'KPIs'), h('p', { class: 'muted' }, 'Loading…'));
  const note = h('p', { class: 'muted' });
  fill(ctx.root,
    h('h1', {}, 'Modules'),
    h('table', { class: 'grid', id: 'modules' }, h('thead', {}, h('tr', {}, ['name', 'id', 'kind', 'size', 'created', 'recent outcomes'].map((c) => h('th', {}, c)))), modulesBody),
    note,
    kpiSection,
  );
  let modules = [];
  let tasks = [];

  function draw() {
    if (!ctx.alive()) return;
    fill(modulesBody,
      ...modules.map((m) =>
        h(
          'tr',
          {},
          h('td', {}, m.name ? h('a', { href: `/ui/tasks?module=${encodeURIComponent(m.name)}` }, m.name) : h('span', { class: 'muted' }, '(no name)')),
          h('td', { class: 'mono', title: m.module }, m.module.slice(0, 19)),
          h('td', {}, m.kind),
          h('td', { class: 'num' }, bytes(m.size)),
          h('td', {}, time(m.created_at)),
          h('td', {}, outcomes(tasks, m.module)),
        ),
      ),
    );
    if (!modules.length) modulesBody.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No modules yet: fabric module put FILE --name NAME.')));
    note.textContent = `Recent outcomes count the newest ${count(tasks.length)} tasks (one task.list page of at most ${RECENT}).`;
  }

  async function loadTasks() {
    tasks = (await rpc('task.list', { limit: RECENT })).tasks;
    draw();
  }

  async function loadKpis() {
    const rows = await kpis(modules);
    if (!ctx.alive()) return;
    if (rows === null) {
      fill(kpiSection, h('h2', {}, 'KPIs'), h('p', { class: 'muted' }, 'KPIs need a newer server (this one has no kpi.query).'));
      return;
    }
    const columns = ['module', 'name', 'count', 'sum', 'min', 'max', 'mean'];
    fill(kpiSection,
      h('h2', {}, 'KPIs'),
      rows.length
        ? h(
            'table',
            { class: 'grid', id: 'kpis' },
            h('thead', {}, h('tr', {}, columns.map((c) => h('th', {}, c)))),
            h('tbody', {}, rows.map((r) => h('tr', {}, h('td', {}, r.module_name || r.module), h('td', {}, r.name), ['count', 'sum', 'min', 'max', 'mean'].map((k) => h('td', { class: 'num' }, typeof r[k] === 'number' ? Number(r[k].toFixed(3)) : r[k] ?? ''))))),
          )
        : h('p', { class: 'muted' }, 'No KPIs recorded yet.'),
    );
  }

  modules = (await rpc('module.list')).modules;
  await loadTasks();
  loadKpis().catch((error) => {
    fill(kpiSection, h('h2', {}, 'KPIs'), h('p', { class: 'error' }, `kpi.query: ${error.message}`));
  });
  const refresh = throttle(() => loadTasks().catch(ctx.failed), 5000);
  const off = ctx.live.on((event) => {
    if (event.dropped === undefined && !['succeeded', 'failed', 'cancelled', 'expired'].includes(event.state)) return;
    refresh();
  });
  return {
    dispose() {
      off();
      refresh.cancel();
    },
  };
}
