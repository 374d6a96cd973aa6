// One task: its spec, timestamps, progress, and every attempt (outcome, error, usage,
// KPIs, output and stderr), with cancel and retry; re-read when its events arrive.

import { METHOD_NOT_FOUND, rpc } from './api.js';
import { TERMINAL, badge, bytes, count, duration, errorBox, fraction, h, ms, outcome, throttle, time, fill } from './dom.js';

const RETRYABLE = ['failed', 'cancelled', 'expired'];

function field(name, ...value) {
  return [h('dt', {}, name), h('dd', {}, ...value)];
}

function text(label, body, truncated) {
  if (body === undefined || body === null || body === '') return null;
  return h('section', { class: 'log' }, h('h4', {}, label, truncated ? ' (truncated)' : ''), h('pre', {}, body));
}

function progressBar(progress) {
  const share = fraction(progress.done);
  const bar = h('div', { class: 'fill' });
  bar.style.width = `${Math.round(share * 100)}%`;
  return h(
    'div',
    { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.round(share * 100) },
    h('div', { class: 'track' }, bar),
    h('span', {}, `${Math.round(share * 100)}%`, progress.message ? ` · ${progress.message}` : '', progress.at ? ` · ${time(progress.at)}` : ''),
  );
}

function kpiTable(kpis) {
  const names = Object.keys(kpis || {});
  if (!names.length) return null;
  return h(
    'section',
    {},
    h('h4', {}, 'KPIs'),
    h(
      'table',
      { class: 'grid kpis' },
      h('thead', {}, h('tr', {}, ['name', 'count', 'sum', 'min', 'max', 'last'].map((c) => h('th', {}, c)))),
      h('tbody', {}, names.map((n) => h('tr', {}, h('td', {}, n), ['count', 'sum', 'min', 'max', 'last'].map((k) => h('td', { class: 'num' }, kpis[n][k] ?? ''))))),
    ),
  );
}

function attemptView(attempt, index) {
  const u = attempt.usage || {};
  const usage = [
    ['fuel', count(u.fuel_consumed)],
    ['peak memory', bytes(u.peak_memory_bytes)],
    ['wall time', ms(u.wall_ms)],
    ['http requests', count(u.http_requests)],
    ['http sent', bytes(u.http_bytes_sent)],
    ['http received', bytes(u.http_bytes_received)],
    ['http denied', count(u.http_denied)],
  ];
  return h(
    'article',
    { class: `attempt o-${attempt.outcome}` },
    h('h3', {}, `Attempt ${index + 1}: `, h('span', { class: 'outcome' }, outcome(attempt))),
    h(
      'dl',
      {},
      field('outcome', attempt.outcome),
      attempt.exit_code !== undefined ? field('exit code', String(attempt.exit_code)) : null,
      attempt.trap ? field('trap', attempt.trap) : null,
      attempt.error ? field('error', attempt.error) : null,
      field('started', time(attempt.started_at)),
      field('finished', time(attempt.finished_at)),
    ),
    h('table', { class: 'grid usage' }, h('tbody', {}, h('tr', {}, usage.map(([k]) => h('th', {}, k))), h('tr', {}, usage.map(([, v]) => h('td', { class: 'num' }, v))))),
    attempt.denials?.length ? h('section', {}, h('h4', {}, 'Denied requests'), h('ul', {}, attempt.denials.map((d) => h('li', {}, `${d.url}: ${d.reason}`)))) : null,
    kpiTable(attempt.kpis),
    text('Output', attempt.output ?? (attempt.output_base64 ? `base64: ${attempt.output_base64}` : null), attempt.output_truncated),
    text('Stderr', attempt.stderr, attempt.stderr_truncated),
  );
}

export async function taskPage(ctx, id) {
  let task = null;
  let message = null;
  const names = await ctx.modules().catch(() => new Map());

  async function act(method) {
    try {
      const result = await rpc(method, { id });
      if (method === 'task.retry') {
        ctx.navigate(`/ui/tasks/${encodeURIComponent(result.id)}`);
        return;
      }
      task = result;
      message = null;
    } catch (error) {
      message = error.code === METHOD_NOT_FOUND ? { message: `${method} needs a newer server` } : error;
    }
    draw();
  }

  function draw() {
    if (!ctx.alive() || !task) return;
    const labels = Object.entries(task.labels || {}).map(([k, v]) =>
      k === 'retry_of' ? h('a', { class: 'chip', href: `/ui/tasks/${encodeURIComponent(v)}` }, `${k}=${v}`) : h('span', { class: 'chip' }, `${k}=${v}`),
    );
    const name = names.get(task.module);
    fill(ctx.root,
      h('p', {}, h('a', { href: '/ui/tasks' }, '← Tasks')),
      h(
        'h1',
        {},
        'Task ',
        h('span', { class: 'mono' }, task.id),
        ' ',
        badge(task.state),
      ),
      h(
        'div',
        { class: 'actions' },
        TERMINAL.includes(task.state) ? null : h('button', { type: 'button', onclick: () => act('task.cancel') }, 'Cancel'),
        RETRYABLE.includes(task.state) ? h('button', { type: 'button', onclick: () => act('task.retry') }, 'Retry as a new task') : null,
      ),
      message ? errorBox(message) : null,
      task.progress ? progressBar(task.progress) : null,
      task.error ? h('p', { class: 'error task-error' }, task.error) : null,
      h(
        'dl',
        { class: 'fields' },
        field('state', task.state),
        field('module', name ? `${name} ` : '', h('span', { class: 'mono' }, task.module)),
        field('priority', task.priority),
        field('labels', labels.length ? labels : '—'),
        field('dirs', Object.entries(task.dirs || {}).map(([g, v]) => `${g} ← ${v}`).join(', ') || '—'),
        field('egress', (task.egress || []).join(', ') || '—'),
        field('created', time(task.created_at)),
        field('started', time(task.started_at) || '—'),
        field('finished', time(task.finished_at) || '—'),
        field('duration', duration(task) || '—'),
      ),
      text('Output', task.output ?? (task.output_base64 ? `base64: ${task.output_base64}` : null)),
      h('h2', {}, `Attempts (${task.attempts.length})`),
      task.attempts.length ? task.attempts.map(attemptView) : h('p', { class: 'muted' }, 'No attempt has ended yet.'),
    );
  }

  async function load() {
    task = await rpc('task.get', { id });
    draw();
  }

  const reload = throttle(() => load().catch(ctx.failed), 500);
  const off = ctx.live.on((event) => {
    if (event.dropped !== undefined) {
      reload();
      return;
    }
    if (event.id !== id) return;
    if (event.progress && task) {
      task.progress = event.progress;
      draw();
    }
    if (event.state !== task?.state || event.attempt) reload();
  });
  await load();
  return {
    dispose() {
      off();
      reload.cancel();
    },
  };
}
