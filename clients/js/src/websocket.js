// A plain WebSocket client for any hub: an ES module with no build step and no dependency.
//
//   import { WebSocketClient } from "/websocket.js"; // or "wshub-client/websocket"
//   const client = new WebSocketClient("/ws", { heartbeat: { message: "ping", returnMessage: "pong" } });
//   client.on("open", ({ reconnected }) => console.log(reconnected ? "back" : "connected"));
//   client.route("notification", (msg) => show(msg.text)); // {"type": "notification", ...}
//   client.connect();
//   client.sendJson({ type: "chat", text: "hi" });          // sent now, or once connected
//
// It keeps one WebSocket open to a URL and knows nothing of what the messages mean. On top
// of the socket it adds what every real-time page needs:
//
// - reconnection with exponential backoff and full jitter, capped, with a maximum number
//   of attempts, and a decision per close code (`shouldReconnect`; by default not after
//   1000, 1003, 1007 or 1009); a close with 1012 (the server is draining) is not a
//   failure: the next attempt is the first of a new run, after at most `minReconnectDelay`;
// - an offline queue: messages sent while (re)connecting wait, up to
//   `offlineQueueCapacity` of them, and are written in call order once the connection is
//   open; they are dropped when the client stops trying (`close()`, gave up, a final close);
// - text, JSON and binary sends (`send`, `sendJson`, `emit`);
// - an optional heartbeat: a message every `interval` ms, and a connection that has
//   received nothing for `timeout` ms is taken for dead and replaced (browsers hide the
//   WebSocket-level ping/pong, so only the application can notice a dead TCP connection);
// - routing of JSON messages by one of their fields (`route("notification", fn)`; the
//   field is `routeField`, `type` by default);
// - a reconnect without waiting out the backoff when the browser says the network is back
//   (`online`) or the page is shown again (`visibilitychange`).
//
// Protocols that greet first build on it with `handshake: true`: the connection then counts
// as open (the offline queue is flushed, `open` is emitted, the attempt count may start
// over) only when `completeHandshake()` is called, and `openTimeout` covers the greeting.
// The wshub protocol client (wshub.js) is built that way.

/** The WebSocket `OPEN` ready state (the same for every implementation). */
const OPEN = 1;

/** Replaces a detached socket's handlers: some implementations (Node's `ws`) throw on an
 * `error` event nobody listens to, e.g. when a socket is abandoned while connecting. */
const ignore = () => {};

/** The heartbeat's defaults (the values react-use-websocket users know). */
const HEARTBEAT = { interval: 25000, timeout: 60000, message: "ping", returnMessage: undefined };

/** The close code of a draining server (service restart, RFC 6455 registry). */
export const SERVICE_RESTART = 1012;

/**
 * The delay before reconnect attempt `attempt` (1 for the first): "full jitter", a
 * random delay between 0 and `min(max, min * 2^(attempt-1))`, so that clients dropped
 * together do not come back together.
 * @param {number} attempt
 * @param {{min?: number, max?: number, random?: () => number}} [options]
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, { min = 500, max = 30000, random = Math.random } = {}) {
  const exponent = Math.max(0, Math.min(attempt - 1, 30)); // 2^30 already exceeds any cap
  const cap = Math.min(max, min * 2 ** exponent);
  return Math.floor(random() * cap);
}

/**
 * Whether a close with this code calls for reconnecting: false for 1000 (closed on purpose)
 * and for the closes the client's own input caused, 1003 (a data type the endpoint does
 * not take), 1007 (invalid UTF-8) and 1009 (message too big), which a new connection would
 * meet again; true for every other code, 1006 (connection lost) and 1013 (try again later)
 * among them. The default of the `shouldReconnect` option.
 * @param {number} code
 * @returns {boolean}
 */
export function reconnectsAfter(code) {
  return code !== 1000 && code !== 1003 && code !== 1007 && code !== 1009;
}

/**
 * One WebSocket at a time to one URL, reopened when it drops.
 *
 * States: `idle` (created), `connecting` (first connection), `open`, `reconnecting`
 * (waiting for or opening the next attempt), `failed` (`maxReconnectAttempts` used up;
 * `connect()` starts over), `closed` (`close()`, or a close `shouldReconnect` refused).
 */
export class WebSocketClient {
  /**
   * @param {string|(() => (string|Promise<string>))} url `ws://` or `wss://` URL, or a
   *   path starting with `/` (resolved against the page's host, `wss:` on an `https:`
   *   page), or a function returning one, called before every attempt (to add a fresh
   *   token, say).
   * @param {object} [options] see websocket.d.ts (`WebSocketClientOptions`)
   */
  constructor(url, options = {}) {
    this.options = {
      protocols: undefined,
      binaryType: "arraybuffer",
      minReconnectDelay: 500,
      maxReconnectDelay: 30000,
      maxReconnectAttempts: Infinity,
      stableAfter: 5000,
      openTimeout: 10000,
      offlineQueueCapacity: 256,
      heartbeat: false,
      routeField: "type",
      handshake: false,
      shouldReconnect: (event) => reconnectsAfter(event.code),
      WebSocket: undefined,
      random: Math.random,
    };
    // Options given as `undefined` keep their defaults.
    for (const [key, value] of Object.entries(options)) {
      if (value !== undefined) this.options[key] = value;
    }
    /** The URL, path or function given to the constructor. */
    this.url = url;
    this._state = "idle";
    this._socket = null;
    /** Whether the current socket counts as open (its handshake done, if any). */
    this._ready = false;
    /** Reconnect attempts in a row; 0 while the connection is stable. */
    this._attempt = 0;
    this._everOpen = false;
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @type {Map<unknown, Set<Function>>} route handlers by the routed field's value */
    this._routes = new Map();
    /** Messages sent while not open, oldest first (a function is called when written). */
    this._queue = [];
    this._timers = { open: null, stable: null, reconnect: null, heartbeat: null, silence: null };
    /**
     * The `online` (window) and `visibilitychange` (document) listeners, as
     * `[target, type, listener]`, while the client is trying to stay connected; null
     * otherwise. Empty outside a browser.
     */
    this._network = null;
    /**
     * Counts `_open()` calls and `close()`s: an `_open()` that finds another one started
     * (or a close) while it awaited the URL gives up, so that `close(); connect();` during
     * a token fetch (React's StrictMode does it) opens one socket, not two.
     */
    this._generation = 0;
  }

  /** @returns {"idle"|"connecting"|"open"|"reconnecting"|"failed"|"closed"} */
  get state() {
    return this._state;
  }

  /** Whether the connection is open (messages are written at once). */
  get isConnected() {
    return this._state === "open";
  }

  /** The current reconnect attempt (0 when connected or never dropped). */
  get attempt() {
    return this._attempt;
  }

  /** How many messages wait in the offline queue. */
  get queued() {
    return this._queue.length;
  }

  /** The current WebSocket (open or opening), or null. */
  get socket() {
    return this._socket;
  }

  /**
   * The WebSocket extensions the server accepted on the open socket (e.g.
   * `"permessage-deflate"`), or `""` when none were, or when no socket is open.
   * @returns {string}
   */
  get extensions() {
    const socket = this._socket;
    if (!socket || socket.readyState !== OPEN) return "";
    return typeof socket.extensions === "string" ? socket.extensions : "";
  }

  /**
   * Listens to an event: `open` ({reconnected}), `close` ({code, reason}), `message` (the
   * socket's MessageEvent: `event.data` is a string, or an ArrayBuffer for binary),
   * `json` (each text message that parses as JSON, parsed), `reconnecting` ({attempt,
   * delay}), `reconnect-failed` ({attempts}), `state` ({state, previous, attempt}),
   * `error` (an Error; a transport error is named `WebSocketError`).
   * @param {string} event
   * @param {Function} listener
   * @returns {() => void} a function that removes the listener
   */
  on(event, listener) {
    return addTo(this._listeners, event, listener);
  }

  /** Stops listening. */
  off(event, listener) {
    removeFrom(this._listeners, event, listener);
  }

  /**
   * Calls `handler` with every JSON object received whose `routeField` (`type` by default)
   * is `value`: `route("notification", fn)` gets `{"type": "notification", ...}`.
   * @param {unknown} value
   * @param {(message: object) => void} handler
   * @returns {() => void} a function that removes the handler
   */
  route(value, handler) {
    return addTo(this._routes, value, handler);
  }

  /**
   * Opens the connection and keeps it open until `close()`. Does nothing when it is
   * already open or opening.
   */
  connect() {
    if (this._state !== "idle" && this._state !== "closed" && this._state !== "failed") return;
    this._attempt = 0;
    this._watchNetwork();
    this._open();
  }

  /**
   * Closes the connection for good: no reconnection, the offline queue is emptied.
   * `connect()` opens it again.
   * @param {number} [code=1000]
   * @param {string} [reason]
   */
  close(code = 1000, reason = "") {
    this._generation += 1;
    this._clearTimers();
    const socket = this._socket;
    this._detach();
    if (socket) {
      try {
        socket.close(code, reason);
      } catch {
        // Already closed.
      }
    }
    this._queue = [];
    if (socket) this._emit("close", { code, reason });
    this._setState("closed");
  }

  /**
   * Takes the current connection for dead (e.g. a protocol ping went unanswered): closes it
   * with 4000 and `reason`, and reconnects as after a drop (the backoff applies).
   * @param {string} [reason]
   */
  reconnect(reason = "reconnect") {
    this._abandon(this._socket, 4000, reason);
  }

  /**
   * Sends a message: a string as text; an ArrayBuffer, typed array or Blob as binary; a
   * function is called when the message is written and what it returns is sent. While the
   * client is connecting or reconnecting (or the connection is not open yet) the message
   * waits in the offline queue and is written, in call order, once the connection is open.
   * @param {string|ArrayBuffer|ArrayBufferView|Blob|(() => unknown)} data
   * @param {{queue?: boolean}} [options] `queue: false` writes now or not at all, handshake
   *   or not (for a protocol's own frames)
   * @returns {boolean} true when written or queued; false when dropped: the queue is full
   *   (or off), the client is not trying to connect (idle, failed, closed), or with
   *   `queue: false` the socket is not open
   */
  send(data, { queue = true } = {}) {
    const socket = this._socket;
    const now = !queue || (this._ready && this._queue.length === 0);
    if (now && socket && socket.readyState === OPEN) {
      try {
        socket.send(typeof data === "function" ? data() : data);
        return true;
      } catch {
        // The socket is closing under us: queued below (its close comes next).
      }
    }
    if (!queue || !this._trying()) return false;
    if (this._queue.length >= this.options.offlineQueueCapacity) return false;
    this._queue.push(data);
    return true;
  }

  /**
   * Sends `JSON.stringify(value)` as text (see `send`).
   * @param {unknown} value
   * @returns {boolean}
   */
  sendJson(value) {
    return this.send(JSON.stringify(value));
  }

  /**
   * Sends `{[routeField]: type, data}` as JSON: the shape `route(type, fn)` receives.
   * @param {string} type
   * @param {unknown} [data]
   * @returns {boolean}
   */
  emit(type, data) {
    return this.sendJson({ [this.options.routeField]: type, data });
  }

  /**
   * Removes a message still waiting in the offline queue (the oldest one `===` to `data`).
   * @param {unknown} data what was given to `send`
   * @returns {boolean} whether it was there
   */
  cancel(data) {
    const index = this._queue.indexOf(data);
    if (index < 0) return false;
    this._queue.splice(index, 1);
    return true;
  }

  /**
   * With `handshake: true`: the protocol's greeting arrived, the connection is open (the
   * offline queue is written, `open` is emitted). Does nothing otherwise.
   */
  completeHandshake() {
    const socket = this._socket;
    if (!this._ready && socket && socket.readyState === OPEN) this._onReady(socket);
  }

  // ---- connection lifecycle ----

  _trying() {
    return this._state === "connecting" || this._state === "reconnecting" || this._state === "open";
  }

  async _open() {
    const generation = ++this._generation;
    this._setState(this._everOpen || this._attempt > 0 ? "reconnecting" : "connecting");
    let url;
    try {
      url = resolveUrl(typeof this.url === "function" ? await this.url() : this.url);
    } catch (error) {
      if (generation !== this._generation) return;
      this._emit("error", error);
      this._scheduleReconnect();
      return;
    }
    // close() (and maybe connect()) may have been called while the URL was awaited.
    if (generation !== this._generation || this._state === "closed") return;
    const WebSocketImpl = this.options.WebSocket || globalThis.WebSocket;
    let socket;
    try {
      const { protocols } = this.options;
      socket = protocols === undefined ? new WebSocketImpl(url) : new WebSocketImpl(url, protocols);
    } catch (error) {
      this._emit("error", error);
      this._scheduleReconnect();
      return;
    }
    if (this.options.binaryType) socket.binaryType = this.options.binaryType;
    this._socket = socket;
    this._ready = false;
    socket.onopen = () => {
      if (socket === this._socket && !this.options.handshake) this._onReady(socket);
    };
    socket.onmessage = (event) => this._onMessage(socket, event);
    socket.onerror = (event) => {
      const error = new Error("WebSocket error");
      error.name = "WebSocketError";
      error.event = event;
      this._emit("error", error);
    };
    socket.onclose = (event) => this._onClose(socket, event.code, event.reason || "");
    // A server that accepts the socket but never opens it (or never greets) is as good as
    // down: the attempt failed.
    if (this.options.openTimeout > 0) {
      this._timers.open = setTimeout(() => {
        this._abandon(socket, 4000, "not open in time");
      }, this.options.openTimeout);
    }
  }

  _onReady(socket) {
    clearTimeout(this._timers.open);
    this._ready = true;
    const reconnected = this._everOpen;
    this._everOpen = true;
    this._setState("open");
    // The attempt count starts over once this connection has proven stable.
    this._timers.stable = setTimeout(() => {
      this._attempt = 0;
    }, this.options.stableAfter);
    this._startHeartbeat(socket);
    this._flush(socket);
    this._emit("open", { reconnected });
  }

  /** Writes the messages queued while offline, in call order. */
  _flush(socket) {
    while (this._queue.length > 0) {
      const data = this._queue[0];
      try {
        socket.send(typeof data === "function" ? data() : data);
      } catch {
        break; // One that cannot be written stays first in line for the next connection.
      }
      this._queue.shift();
    }
  }

  _onMessage(socket, event) {
    if (socket !== this._socket) return;
    const heartbeat = this._heartbeat();
    if (heartbeat) {
      this._expectMessage(socket, heartbeat);
      if (heartbeat.returnMessage !== undefined && event.data === heartbeat.returnMessage) return;
    }
    this._emit("message", event);
    if (typeof event.data !== "string") return;
    const wantsJson = this._routes.size > 0 || this._listeners.get("json")?.size > 0;
    if (!wantsJson) return;
    let value;
    try {
      value = JSON.parse(event.data);
    } catch {
      return; // Text that is not JSON: a `message`, nothing more.
    }
    this._emit("json", value);
    dispatch(this._routes, value, this.options.routeField, (handler) => this._call(handler, value));
  }

  /** The heartbeat's settings, or null when it is off. */
  _heartbeat() {
    const { heartbeat } = this.options;
    if (!heartbeat) return null;
    return heartbeat === true ? HEARTBEAT : { ...HEARTBEAT, ...heartbeat };
  }

  _startHeartbeat(socket) {
    const heartbeat = this._heartbeat();
    if (!heartbeat) return;
    const beat = () => {
      this._timers.heartbeat = setTimeout(() => {
        const { message } = heartbeat;
        const data = typeof message === "function" ? message() : message;
        this.send(typeof data === "string" || isBinary(data) ? data : JSON.stringify(data), { queue: false });
        beat();
      }, heartbeat.interval);
    };
    beat();
    this._expectMessage(socket, heartbeat);
  }

  /** (Re)starts the wait for the next message: none within `timeout` means a dead link. */
  _expectMessage(socket, heartbeat) {
    if (!this._ready || !(heartbeat.timeout > 0)) return;
    clearTimeout(this._timers.silence);
    this._timers.silence = setTimeout(() => {
      this._abandon(socket, 4000, `nothing received for ${heartbeat.timeout} ms`);
    }, heartbeat.timeout);
  }

  /**
   * Gives up on a socket that is not closing by itself (not open in time, no heartbeat
   * reply): a dead TCP connection can take minutes to report its close, so it is treated
   * as closed now.
   */
  _abandon(socket, code, reason) {
    if (!socket || socket !== this._socket) return;
    try {
      socket.close(code, reason);
    } catch {
      // Already closing.
    }
    this._onClose(socket, code, reason);
  }

  _onClose(socket, code, reason) {
    if (socket !== this._socket) return; // an abandoned socket reporting late
    this._clearTimers();
    this._detach();
    this._emit("close", { code, reason });
    if (this._state === "closed") return;
    if (!this.options.shouldReconnect({ code, reason })) {
      this._queue = [];
      this._setState("closed");
      return;
    }
    // 1012 (service restart): the server is draining and spreads its closes over time.
    // Not a failure: come back promptly, as the first attempt of a new run (a random delay
    // up to `minReconnectDelay`).
    if (code === SERVICE_RESTART) this._attempt = 0;
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    this._attempt += 1;
    if (this._attempt > this.options.maxReconnectAttempts) {
      this._queue = [];
      this._setState("failed");
      this._emit("reconnect-failed", { attempts: this._attempt - 1 });
      return;
    }
    const delay = backoffDelay(this._attempt, {
      min: this.options.minReconnectDelay,
      max: this.options.maxReconnectDelay,
      random: this.options.random,
    });
    this._setState("reconnecting");
    this._emit("reconnecting", { attempt: this._attempt, delay });
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      this._open();
    }, delay);
  }

  /**
   * The network is back (`online`) or the page is visible again: a reconnect waiting out
   * its backoff delay is made now. The attempt still counts towards
   * `maxReconnectAttempts`.
   */
  _wake() {
    if (this._state !== "reconnecting" || this._timers.reconnect === null) return;
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = null;
    this._open();
  }

  /** Listens for the browser's hints that a connection could work now (none in Node). */
  _watchNetwork() {
    if (this._network) return;
    this._network = [];
    const win = globalThis.window;
    const doc = globalThis.document;
    if (win && typeof win.addEventListener === "function") {
      this._network.push([win, "online", () => this._wake()]);
    }
    if (doc && typeof doc.addEventListener === "function") {
      this._network.push([
        doc,
        "visibilitychange",
        () => {
          if (doc.visibilityState === "visible") this._wake();
        },
      ]);
    }
    for (const [target, type, listener] of this._network) target.addEventListener(type, listener);
  }

  _unwatchNetwork() {
    if (!this._network) return;
    for (const [target, type, listener] of this._network) target.removeEventListener(type, listener);
    this._network = null;
  }

  _detach() {
    const socket = this._socket;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      socket.onerror = ignore;
    }
    this._socket = null;
    this._ready = false;
  }

  _clearTimers() {
    for (const key of Object.keys(this._timers)) {
      clearTimeout(this._timers[key]);
      this._timers[key] = null;
    }
  }

  _setState(state) {
    const previous = this._state;
    if (previous === state) return;
    this._state = state;
    // A client that stopped trying needs no wake-ups; `connect()` listens again.
    if (state === "closed" || state === "failed") this._unwatchNetwork();
    this._emit("state", { state, previous, attempt: this._attempt });
  }

  _emit(event, value) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) this._call(listener, value);
  }

  /** Calls application code; its exceptions are reported, never break the client. */
  _call(fn, value) {
    callSafely(fn, value);
  }
}

// ---- module helpers ----

/** Adds `fn` to the set under `key`; returns its remover. */
function addTo(map, key, fn) {
  let set = map.get(key);
  if (!set) {
    set = new Set();
    map.set(key, set);
  }
  set.add(fn);
  return () => removeFrom(map, key, fn);
}

/** Removes `fn` from the set under `key`. */
function removeFrom(map, key, fn) {
  const set = map.get(key);
  if (!set) return;
  set.delete(fn);
  if (set.size === 0) map.delete(key);
}

/**
 * Routing by a field: when `value` is a JSON object whose `field` names a route of
 * `routes`, `call` is given each of its handlers.
 */
function dispatch(routes, value, field, call) {
  if (routes.size === 0 || !value || typeof value !== "object" || Array.isArray(value)) return;
  const handlers = routes.get(value[field]);
  if (handlers) for (const handler of [...handlers]) call(handler);
}

/** Calls application code; its exceptions are reported, never break the caller. */
function callSafely(fn, value, second) {
  try {
    fn(value, second);
  } catch (error) {
    if (typeof globalThis.reportError === "function") globalThis.reportError(error);
    else setTimeout(() => { throw error; });
  }
}

/** A path starting with `/` becomes a URL on the page's host (ws: or wss: as the page). */
function resolveUrl(url) {
  if (typeof url !== "string" || !url.startsWith("/")) return url;
  const location = globalThis.location;
  const scheme = location && location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location ? location.host : "localhost"}${url}`;
}

function isBinary(data) {
  return (
    data instanceof ArrayBuffer ||
    ArrayBuffer.isView(data) ||
    (typeof Blob !== "undefined" && data instanceof Blob)
  );
}
