// The overview: counts by state and by priority (fabric.stats, refreshed at most every
// 3 s while events arrive), workers busy/total, and throughput and attempt latency
// computed in the page from the live task.event notifications since it opened.

import { rpc } from './api.js';
import { PRIORITIES, STATES, count, h, ms, throttle, fill } from './dom.js';

const WINDOW_MS = 5 * 60 * 1000;
const BUCKET_MS = 10 * 1000;
const STATS_EVERY_MS = 3000;
const STATS_IDLE_MS = 15000;

// Finished tasks seen since the page opened: {at, state, outcome, wall_ms}.
const finished = [];
const openedAt = Date.now();

export function recordEvent(event) {
  if (!event.id || !['succeeded', 'failed', 'cancelled', 'expired'].includes(event.state)) return;
  finished.push({
    at: Date.now(),
    state: event.state,
    outcome: event.attempt?.outcome,
    wall: event.attempt?.usage?.wall_ms,
  });
  const cut = Date.now() - WINDOW_MS;
  while (finished.length && finished[0].at < cut) finished.shift();
}

function percentile(sorted, p) {
  if (!sorted.length) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function latencyRow(label, since) {
  const walls = finished.filter((f) => f.at >= since && typeof f.wall === 'number').map((f) => f.wall).sort((a, b) => a - b);
  const done = finished.filter((f) => f.at >= since).length;
  const minutes = (Date.now() - Math.max(since, openedAt)) / 60000;
  const rate = minutes > 0 ? done / minutes : 0;
  return h(
    'tr',
    {},
    h('th', { scope: 'row' }, label),
    h('td', { class: 'num' }, count(done)),
    h('td', { class: 'num' }, rate.toFixed(1)),
    h('td', { class: 'num' }, ms(percentile(walls, 50))),
    h('td', { class: 'num' }, ms(percentile(walls, 95))),
    h('td', { class: 'num' }, ms(walls[walls.length - 1])),
  );
}

function throughputChart() {
  const now = Date.now();
  const buckets = Math.floor(WINDOW_MS / BUCKET_MS);
  const ok = new Array(buckets).fill(0);
  const bad = new Array(buckets).fill(0);
  for (const f of finished) {
    const i = buckets - 1 - Math.floor((now - f.at) / BUCKET_MS);
    if (i < 0 || i >= buckets) continue;
    if (f.state === 'succeeded') ok[i] += 1;
    else bad[i] += 1;
  }
  const peak = Math.max(1, ...ok.map((n, i) => n + bad[i]));
  const bars = ok.map((n, i) =>
    h(
      'div',
      { class: 'bar', title: `${n} succeeded, ${bad[i]} not, ${Math.round(((buckets - 1 - i) * BUCKET_MS) / 1000)} s ago` },
      h('div', { class: 'bad', style: null, 'data-h': bad[i] }),
      h('div', { class: 'ok', 'data-h': n }),
    ),
  );
  const chart = h('div', { class: 'chart', role: 'img', 'aria-label': 'tasks finished per 10 seconds, last 5 minutes' }, bars);
  // Heights through the CSSOM (allowed by style-src 'self', unlike inline style attributes).
  for (const part of chart.querySelectorAll('[data-h]')) part.style.height = `${(100 * Number(part.dataset.h)) / peak}%`;
  return h('figure', {}, chart, h('figcaption', {}, `Finished tasks per 10 s over the last 5 minutes (peak ${peak}); green succeeded, red did not.`));
}

export async function overviewPage(ctx) {
  let stats = null;
  let error = null;
  const root = ctx.root;

  function draw() {
    if (!ctx.alive()) return;
    const parts = [h('h1', {}, 'Overview')];
    if (error) parts.push(h('p', { class: 'error' }, `fabric.stats: ${error.message}`));
    if (stats) {
      const queued = PRIORITIES.reduce((sum, p) => sum + (stats.queued[p] || 0), 0);
      const byState = { ...stats, queued };
      parts.push(
        h(
          'section',
          { class: 'cards' },
          h('div', { class: 'card' }, h('div', { class: 'big' }, `${count(stats.running)} / ${count(stats.workers)}`), h('div', {}, 'workers busy / total')),
          h('div', { class: 'card' }, h('div', { class: 'big' }, count(queued)), h('div', {}, 'queued')),
          h('div', { class: 'card' }, h('div', { class: 'big' }, count(stats.succeeded)), h('div', {}, 'succeeded')),
          h('div', { class: 'card bad' }, h('div', { class: 'big' }, count(stats.failed)), h('div', {}, 'failed')),
        ),
        h(
          'div',
          { class: 'cols' },
          h(
            'section',
            {},
            h('h2', {}, 'Tasks by state'),
            h(
              'table',
              { class: 'counts', id: 'by-state' },
              h('tbody', {}, STATES.map((s) => h('tr', {}, h('th', { scope: 'row' }, h('a', { href: `/ui/tasks?state=${s}` }, s)), h('td', { class: 'num' }, count(byState[s]))))),
            ),
          ),
          h(
            'section',
            {},
            h('h2', {}, 'Queued by priority'),
            h(
              'table',
              { class: 'counts', id: 'by-priority' },
              h('tbody', {}, PRIORITIES.map((p) => h('tr', {}, h('th', { scope: 'row' }, p), h('td', { class: 'num' }, count(stats.queued[p]))))),
            ),
            h('p', { class: 'muted' }, `Tenant cap: ${count(stats.tenant_max_running)} running attempts per tenant on this node.`),
          ),
        ),
      );
    }
    parts.push(
      h('h2', {}, 'Throughput and attempt latency'),
      h(
        'p',
        { class: 'muted' },
        `Computed in this page from live task.event notifications since it opened at ${new Date(openedAt).toLocaleTimeString(undefined, { hour12: false })} (latency is each finished task's last attempt's wall time).`,
      ),
      h(
        'table',
        { class: 'grid', id: 'latency' },
        h('thead', {}, h('tr', {}, ['window', 'finished', 'per minute', 'p50', 'p95', 'max'].map((c) => h('th', {}, c)))),
        h('tbody', {}, latencyRow('last minute', Date.now() - 60000), latencyRow('last 5 minutes', Date.now() - WINDOW_MS)),
      ),
      throughputChart(),
    );
    fill(root, parts);
  }

  async function load() {
    try {
      stats = await rpc('fabric.stats');
      error = null;
    } catch (e) {
      if (!stats) throw e;
      error = e;
    }
    draw();
  }

  const refresh = throttle(() => load().catch(ctx.failed), STATS_EVERY_MS);
  const redraw = throttle(draw, 1000);
  const off = ctx.live.on(() => {
    refresh();
    redraw();
  });
  const idle = setInterval(refresh, STATS_IDLE_MS);
  const tick = setInterval(redraw, 5000);
  await load();
  return {
    dispose() {
      off();
      clearInterval(idle);
      clearInterval(tick);
      refresh.cancel();
      redraw.cancel();
    },
  };
}
