// The JSON-RPC API (POST /rpc) and the live event stream (task.subscribe over the
// WebSocket at /rpc), with the user's token from sessionStorage.

const TOKEN_KEY = 'fabric.token';
const SUBSCRIBE_ID = 'subscribe';

export class RpcError extends Error {
  constructor(code, message, data, status) {
    super(message);
    this.code = code;
    this.data = data;
    this.status = status;
  }
}

export const UNAUTHORIZED = -32001;
export const METHOD_NOT_FOUND = -32601;

export function isAuthError(error) {
  return error instanceof RpcError && (error.code === UNAUTHORIZED || error.status === 401);
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

let nextId = 1;

export async function rpc(method, params = {}) {
  const headers = { 'content-type': 'application/json' };
  const bearer = token();
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  const body = JSON.stringify({ jsonrpc: '2.0', id: nextId++, method, params });
  let response;
  try {
    response = await fetch('/rpc', { method: 'POST', headers, body, cache: 'no-store' });
  } catch (error) {
    throw new RpcError(0, `cannot reach the server: ${error.message}`);
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    answer = null;
  }
  if (response.status === 401) {
    throw new RpcError(UNAUTHORIZED, answer?.error?.message || 'unauthorized', null, 401);
  }
  if (!answer) throw new RpcError(0, `HTTP ${response.status} from /rpc`, null, response.status);
  if (answer.error) {
    const { code, message, data } = answer.error;
    throw new RpcError(code, message, data, response.status);
  }
  return answer.result;
}

// The token as a WebSocket subprotocol (browsers cannot set Authorization there).
function bearerProtocol(value) {
  const utf8 = new TextEncoder().encode(value);
  let binary = '';
  for (const b of utf8) binary += String.fromCharCode(b);
  const b64url = btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  return `fabric.bearer.${b64url}`;
}

// One WebSocket subscribed to every task event the caller may see; reconnects with
// backoff; tells listeners about each event, and `{dropped}` when the server dropped some.
export class Live {
  constructor() {
    this.listeners = new Set();
    this.statusListeners = new Set();
    this.socket = null;
    this.backoff = 1000;
    this.stopped = true;
    this.status = 'off';
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close();
    this.socket = null;
    this.setStatus('off');
  }

  connect() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const protocols = ['fabric.rpc'];
    const bearer = token();
    if (bearer) protocols.push(bearerProtocol(bearer));
    const socket = new WebSocket(`${scheme}//${location.host}/rpc`, protocols);
    this.socket = socket;
    this.setStatus('connecting');
    socket.onopen = () => {
      socket.send(JSON.stringify({ jsonrpc: '2.0', id: SUBSCRIBE_ID, method: 'task.subscribe', params: {} }));
    };
    socket.onmessage = (message) => {
      let msg;
      try {
        msg = JSON.parse(message.data);
      } catch {
        return;
      }
      if (msg.id === SUBSCRIBE_ID) {
        if (msg.result) {
          this.backoff = 1000;
          this.setStatus('live');
          // Events may have been missed while disconnected.
          this.emit({ dropped: 0, reconnected: true });
        }
      } else if (msg.method === 'task.event') {
        this.emit(msg.params);
      } else if (msg.method === 'task.events_dropped') {
        this.emit({ dropped: msg.params.dropped });
      }
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.setStatus('off');
      if (this.stopped) return;
      this.timer = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 30000);
    };
  }

  emit(event) {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (error) {
        console.error(error);
      }
    }
  }

  on(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onStatus(listener) {
    this.statusListeners.add(listener);
    listener(this.status);
  }

  setStatus(status) {
    this.status = status;
    for (const listener of this.statusListeners) listener(status);
  }
}
