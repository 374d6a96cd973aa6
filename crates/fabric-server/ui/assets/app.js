// The dashboard's shell: client-side routing (history.pushState), the token prompt, and
// the one live event stream every page listens to.

import { Live, isAuthError, rpc, setToken, token } from './api.js';
import { errorBox, h, fill } from './dom.js';
import { modulesPage } from './modules.js';
import { overviewPage, recordEvent } from './overview.js';
import { taskPage } from './task.js';
import { tasksPage } from './tasks.js';

const ROUTES = [
  [/^\/ui\/?$/, 'overview', overviewPage],
  [/^\/ui\/tasks\/?$/, 'tasks', tasksPage],
  [/^\/ui\/tasks\/([^/]+)\/?$/, 'tasks', taskPage],
  [/^\/ui\/modules\/?$/, 'modules', modulesPage],
];

const live = new Live();
live.on(recordEvent);
let current = null;
let generation = 0;
let moduleNames = null;

function main() {
  return document.getElementById('main');
}

export function navigate(url) {
  history.pushState(null, '', url);
  render();
}

// id -> name of the caller's modules, read once per sign-in (and again on demand).
function modules(reload = false) {
  if (!moduleNames || reload) {
    moduleNames = rpc('module.list').then((r) => {
      const names = new Map();
      for (const m of r.modules) names.set(m.module, m.name || '');
      return names;
    });
    moduleNames.catch(() => {
      moduleNames = null;
    });
  }
  return moduleNames;
}

async function render() {
  generation += 1;
  const mine = generation;
  if (current?.dispose) current.dispose();
  current = null;
  const path = location.pathname;
  const route = ROUTES.find(([pattern]) => pattern.test(path));
  for (const link of document.querySelectorAll('nav a')) {
    link.classList.toggle('active', route && link.dataset.page === route[1]);
  }
  const root = main();
  root.replaceChildren();
  if (!route) {
    root.append(h('h1', {}, 'Not found'), h('p', {}, `Nothing at ${path}. `, h('a', { href: '/ui/' }, 'Overview')));
    return;
  }
  const [pattern, name, page] = route;
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · Execution Fabric`;
  const args = path.match(pattern).slice(1).map(decodeURIComponent);
  const ctx = {
    root,
    live,
    navigate,
    modules,
    params: new URLSearchParams(location.search),
    alive: () => mine === generation,
    failed: (error) => failed(error, mine),
  };
  try {
    const view = await page(ctx, ...args);
    if (mine === generation) current = view;
    else view?.dispose?.();
  } catch (error) {
    ctx.failed(error);
  }
}

// A page's call failed: ask for a token when that was the reason, else say what failed.
function failed(error, mine) {
  if (mine !== generation) return;
  if (isAuthError(error)) {
    askToken(token() ? 'The server refused the token.' : null);
    return;
  }
  main().append(errorBox(error));
}

// Shows only the token form (no tenant data) until a token the server accepts is given.
function askToken(problem) {
  generation += 1;
  if (current?.dispose) current.dispose();
  current = null;
  live.stop();
  setToken(null);
  moduleNames = null;
  document.getElementById('signout').hidden = true;
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, size: 48 });
  const status = h('p', { class: 'error', role: 'alert' }, problem || '');
  const form = h(
    'form',
    {
      class: 'token',
      onsubmit: async (event) => {
        event.preventDefault();
        setToken(input.value.trim());
        try {
          await rpc('fabric.stats');
        } catch (error) {
          setToken(null);
          status.textContent = isAuthError(error) ? 'The server refused this token.' : error.message;
          return;
        }
        start();
      },
    },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'This server needs a token (from its --auth file). It is kept in this tab only (sessionStorage) and sent as Authorization: Bearer.'),
    h('label', {}, 'Token ', input),
    h('button', { type: 'submit' }, 'Sign in'),
    status,
  );
  fill(main(), form);
  input.focus();
}

async function start() {
  try {
    await rpc('fabric.stats');
  } catch (error) {
    if (isAuthError(error)) {
      askToken(token() ? 'The server refused the token.' : null);
      return;
    }
  }
  document.getElementById('signout').hidden = !token();
  live.start();
  render();
}

document.addEventListener('click', (event) => {
  const link = event.target.closest('a');
  if (!link || link.target || link.origin !== location.origin || !link.pathname.startsWith('/ui')) return;
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigate(link.pathname + link.search);
});
window.addEventListener('popstate', render);
document.getElementById('signout').addEventListener('click', () => askToken(null));
live.onStatus((status) => {
  const badge = document.getElementById('live');
  badge.className = `live ${status}`;
  badge.textContent = status === 'live' ? 'live' : status === 'connecting' ? 'connecting…' : 'offline';
});
start();
