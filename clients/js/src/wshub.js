// wshub browser client: an ES module with no build step and no dependency.
//
//   import { WshubClient } from "/client.js";
//   const client = new WshubClient({ token });
//   client.on("state", ({ state }) => console.log(state));
//   client.connect();
//   await client.subscribe("chat:lobby", (frame) => console.log(frame)); // once connected
//   await client.publish("chat:lobby", { text: "hi" });
//
// It speaks the wshub wire protocol (docs/PROTOCOL.md): one JSON object per text frame,
// commands with an `id` answered by a reply with the same `id`. It is built on the plain
// WebSocket client (websocket.js, `WebSocketClient` with `handshake: true`: a connection
// counts as open at the server's `welcome`), which brings the socket, the reconnection
// with backoff, the offline queue and the browser's wake-ups; on top it adds:
//
// - reconnection with exponential backoff and full jitter, capped, with a maximum number
//   of attempts (websocket.js);
// - subscriptions that survive reconnects: each room's last `epoch`/`offset` is kept and
//   sent as `since` when resubscribing, so the server replays what was missed
//   (`recovered: false` in the `subscribed` event says when it could not);
// - requests as promises, settled by the reply with the matching `id`, or rejected on a
//   timeout or when the connection drops; a subscribe made while reconnecting waits for
//   the connection, and is rejected when none is coming (gave up, final close, `close()`);
// - an offline queue: publishes made while the connection is down wait (up to
//   `offlineQueueCapacity` of them, each until its timeout) in websocket.js's queue and
//   are sent, in call order, right after the next connection has resubscribed;
// - a reconnect without waiting out the backoff when the browser says the network is back
//   (`online`) or the page is shown again (`visibilitychange`) (websocket.js);
// - an application-level `ping` that notices a dead connection (browsers hide the
//   WebSocket-level ping/pong) and reconnects.
//
// Frames are routed by their `type`: replies settle their request; `message`, `join` and
// `leave` go to the room's handlers and then to the event of that name; every other type
// (`direct`, `broadcast`, and types a newer server may add) is emitted as the event of
// that name, so `client.on("direct", ...)` and `client.on("some-new-type", ...)` both work.
// `message`, `direct` and `broadcast` frames are also routed by a field of their `data`
// (`routeField`, `type` by default): `client.route("notification", (data, frame) => ...)`
// gets every frame whose `data` is `{"type": "notification", ...}`.
//
// Extension points, for the TypeScript declarations (wshub.d.ts) and the React hook
// (react.js) built on this class: `request()` sends any command; `on("frame")` sees every
// frame from the server; several handlers may share one room subscription;
// `position(room)` exposes the stream position to persist.

import { WebSocketClient, backoffDelay, reconnectsAfter } from "./websocket.js";

export { backoffDelay, reconnectsAfter };

/**
 * The client's own events; a frame type with one of these names is not emitted as an
 * event of that name (it would be taken for the client's own).
 */
const CLIENT_EVENTS = new Set([
  "open",
  "close",
  "error",
  "reconnecting",
  "reconnected",
  "reconnect-failed",
  "state",
  "subscribed",
  "frame",
]);

/** The frame types whose `data` is routed by `route()`: what peers and backends send. */
const ROUTED_TYPES = new Set(["message", "direct", "broadcast"]);

/**
 * Connection states, in the order a connection usually goes through them.
 * - `idle`: created, `connect()` not called yet.
 * - `connecting`: the first connection is being opened.
 * - `connected`: the server's `welcome` arrived.
 * - `reconnecting`: waiting for, or opening, the next attempt after a drop.
 * - `failed`: `maxReconnectAttempts` were used up; `connect()` starts over.
 * - `closed`: `close()` was called.
 * @typedef {"idle"|"connecting"|"connected"|"reconnecting"|"failed"|"closed"} ConnectionState
 */

/**
 * A stream position in one room (docs/PROTOCOL.md: offsets and epochs).
 * @typedef {{epoch: string, offset: number}} StreamPosition
 */

/**
 * @typedef {Object} WshubClientOptions
 * @property {string} [url] The WebSocket URL. Default: `ws(s)://<page host><path>`.
 * @property {string} [path="/ws"] The endpoint's path, used when `url` is not given.
 * @property {string|(() => (string|null|Promise<string|null>))} [token] A JWT, or a
 *   function returning one (called before every connection attempt, so it can fetch a
 *   fresh token after one expired). Sent as the `token` query parameter.
 * @property {number} [minReconnectDelay=500] The first reconnect delay's cap, in ms.
 * @property {number} [maxReconnectDelay=30000] The cap of every reconnect delay, in ms.
 * @property {number} [maxReconnectAttempts=Infinity] Attempts in a row before giving up
 *   (state `failed`, event `reconnect-failed`).
 * @property {number} [stableAfter=5000] How long a connection must stay up before the
 *   attempt count starts over, in ms; a server that accepts and drops at once is then
 *   retried with growing delays instead of in a tight loop.
 * @property {number} [requestTimeout=10000] How long a request waits for its reply, and
 *   the connection for the `welcome` frame, in ms.
 * @property {number} [pingInterval=25000] How often to send an application `ping`, in
 *   ms; 0 turns it off.
 * @property {number} [pongTimeout=10000] How long to wait for its `pong` before taking
 *   the connection for dead, closing it and reconnecting, in ms.
 * @property {number} [offlineQueueCapacity=256] How many publishes made while the client
 *   is (re)connecting are kept, to be sent once the connection is back (after the rooms
 *   are subscribed again); a publish that does not fit is rejected at once with
 *   `offline_queue_full`. 0 turns the queue off: such publishes are rejected with
 *   `disconnected`.
 * @property {(event: {code: number, reason: string}) => boolean} [shouldReconnect]
 *   Whether to reconnect after the server closed the connection. Default:
 *   {@link reconnectsAfter}, the same rule as the Rust client's: not after 1000 (closed on
 *   purpose, e.g. by the HTTP API's disconnect) nor after 1003, 1007 or 1009 (the client's
 *   own messages were refused, and would be again).
 * @property {typeof WebSocket} [WebSocket] The WebSocket constructor. Default: the
 *   global one (tests inject a fake).
 * @property {() => number} [random=Math.random] The jitter's source, in [0, 1).
 * @property {string} [routeField="type"] The field of a frame's `data` that `route()`
 *   matches.
 */

/** An error reply from the server, or a request that could not be answered. */
export class WshubError extends Error {
  /**
   * @param {string} code A docs/PROTOCOL.md error code (`bad_request`, `forbidden`, ...), or
   *   one of the client's own: `timeout` (no reply in time), `disconnected` (the
   *   connection dropped or was not open), `closed` (the client was closed),
   *   `offline_queue_full` (a publish made while disconnected found the offline queue
   *   full).
   * @param {string} message Human-readable text.
   * @param {object} [frame] The server's error frame, when there was one.
   */
  constructor(code, message, frame) {
    super(message);
    this.name = "WshubError";
    /** @type {string} */
    this.code = code;
    /** @type {object|undefined} */
    this.frame = frame;
  }
}

/** A client of one wshub server: one WebSocket at a time, reopened when it drops. */
export class WshubClient {
  /** @param {WshubClientOptions} [options] */
  constructor(options = {}) {
    this.options = {
      path: "/ws",
      minReconnectDelay: 500,
      maxReconnectDelay: 30000,
      maxReconnectAttempts: Infinity,
      stableAfter: 5000,
      requestTimeout: 10000,
      pingInterval: 25000,
      pongTimeout: 10000,
      offlineQueueCapacity: 256,
      shouldReconnect: (event) => reconnectsAfter(event.code),
      random: Math.random,
      routeField: "type",
    };
    // Options given as `undefined` keep their defaults.
    for (const [key, value] of Object.entries(options)) {
      if (value !== undefined) this.options[key] = value;
    }
    /** @type {ConnectionState} */
    this._state = "idle";
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @type {Map<unknown, Set<Function>>} route handlers by the routed field's value */
    this._routes = new Map();
    /** Requests waiting for their reply, by id. */
    this._pending = new Map();
    /**
     * Publishes made while (re)connecting, not written yet: they wait in the link's
     * offline queue (as their `frame` function, called when written), their timeout
     * already running. Kept here too, to be rejected when no connection is coming.
     */
    this._queue = new Set();
    this._nextId = 1;
    /**
     * Rooms to be subscribed to, kept across reconnects.
     * @type {Map<string, {handlers: Set<Function>, epoch: string|null, offset: number,
     *   delivered: number, subscribed: boolean, ok: object|null,
     *   waiters: Array<{resolve: Function, reject: Function}>}>}
     */
    this._rooms = new Map();
    this._timers = { ping: null };
    /** The current connection's `welcome` frame, or null when none is open. */
    this._welcome = null;
    this._everConnected = false;
    /** The code of the last close, for the messages of what it fails. */
    this._lastClose = 1000;
    const settings = this.options;
    /**
     * The connection: socket, reconnection with backoff, offline queue, wake-ups. It reads
     * the URL (and token) and the close policy from `options` at each attempt.
     */
    this._link = new WebSocketClient(() => this._url(), {
      WebSocket: settings.WebSocket,
      minReconnectDelay: settings.minReconnectDelay,
      maxReconnectDelay: settings.maxReconnectDelay,
      maxReconnectAttempts: settings.maxReconnectAttempts,
      stableAfter: settings.stableAfter,
      // A server that accepts the socket but never says welcome is as good as down.
      openTimeout: settings.requestTimeout,
      offlineQueueCapacity: settings.offlineQueueCapacity,
      shouldReconnect: (event) => this.options.shouldReconnect(event),
      random: () => this.options.random(),
      handshake: true,
      // The protocol has its own ping (`pingInterval`), answered by the server.
      heartbeat: false,
    });
    this._link.on("message", (event) => this._onData(event.data));
    this._link.on("close", (event) => this._onClose(event));
    this._link.on("state", ({ state }) => this._onLinkState(state));
    this._link.on("reconnecting", (event) => this._emit("reconnecting", event));
    this._link.on("reconnect-failed", (event) => this._emit("reconnect-failed", event));
    this._link.on("error", (error) =>
      this._emit("error", error.name === "WebSocketError" ? new WshubError("disconnected", "WebSocket error") : error),
    );
  }

  /** @returns {ConnectionState} */
  get state() {
    return this._state;
  }

  /** The connection id the server gave this connection, or null when not connected. */
  get clientId() {
    return this._welcome ? this._welcome.client : null;
  }

  /** The user (`sub` of the token) the server knows this connection as, or null. */
  get user() {
    return this._welcome ? this._welcome.user : null;
  }

  /** The current reconnect attempt (0 when connected or never dropped). */
  get attempt() {
    return this._link.attempt;
  }

  /**
   * The WebSocket extensions the server accepted on the open connection (the socket's
   * `extensions`, e.g. `"permessage-deflate"`), or `""` when none were, or when no
   * connection is open.
   * @returns {string}
   */
  get extensions() {
    return this._link.extensions;
  }

  /** The link's browser listeners (`online`, `visibilitychange`), for the tests. */
  get _network() {
    return this._link._network;
  }

  /**
   * Listens to an event. Events and their argument:
   * - `open` (welcome frame): the first connection is ready.
   * - `reconnected` (welcome frame): a later connection is ready and resubscribing.
   * - `close` ({code, reason}): a connection closed (it may reconnect).
   * - `reconnecting` ({attempt, delay}): the next attempt starts in `delay` ms.
   * - `reconnect-failed` ({attempts}): gave up; state `failed`.
   * - `state` ({state, previous, attempt}): the connection state changed.
   * - `error` (WshubError or Error): an error frame without `id`, or a transport error.
   * - `subscribed` ({room, epoch, offset, recovered, lost, resubscribed}): a room's
   *   subscribe (or resubscribe after a reconnect) was accepted; `recovered: false` means
   *   messages were missed and could not be replayed, and `lost` (an array of
   *   {epoch, from, to?}, inclusive offsets; `to` absent when that epoch ended) says which:
   *   fetch just those from the application's own source. `lost` is undefined when
   *   `recovered` is not false, and empty when the server does not say.
   * - `message`, `join`, `leave` (frame): a room's frames, after its handlers.
   * - `unrecoverable` ({room, epoch, offset, recovered: false, lost}): the server lost
   *   the room's publications up to `epoch`/`offset` that this client had not received
   *   (a cluster's backplane lost them), `lost` names them as on `subscribed`; the
   *   room's position moves there.
   * - `direct`, `broadcast` (frame): a `send` to this connection, a broadcast.
   * - any other frame type the server sends (frame), by its `type`.
   * - `frame` (frame): every frame from the server, first.
   * @param {string} event
   * @param {Function} listener
   * @returns {() => void} a function that removes the listener
   */
  on(event, listener) {
    let set = this._listeners.get(event);
    if (!set) {
      set = new Set();
      this._listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /**
   * Stops listening.
   * @param {string} event
   * @param {Function} listener
   */
  off(event, listener) {
    const set = this._listeners.get(event);
    if (set) set.delete(listener);
  }

  /**
   * Routes by a field of what peers and backends send: `handler(data, frame)` is called
   * for every `message` (of a subscribed room, after its handlers, each offset once),
   * `direct` and `broadcast` frame whose `data` is an object with `data[routeField]`
   * (`type` by default) equal to `value`.
   * @param {unknown} value
   * @param {(data: object, frame: object) => void} handler
   * @returns {() => void} a function that removes the handler
   */
  route(value, handler) {
    let set = this._routes.get(value);
    if (!set) {
      set = new Set();
      this._routes.set(value, set);
    }
    set.add(handler);
    return () => {
      set.delete(handler);
      if (set.size === 0 && this._routes.get(value) === set) this._routes.delete(value);
    };
  }

  /**
   * Opens the connection (and keeps it open until `close()`). Does nothing when it is
   * already open or opening. In a browser, a reconnect waiting out its backoff delay is
   * made at once when the network comes back (`online`) or the page becomes visible.
   */
  connect() {
    this._link.connect();
  }

  /**
   * Closes the connection for good: no reconnection; pending requests, queued publishes
   * and subscribes still waiting for their `ok` are rejected with `closed`. `connect()`
   * opens it again, with the same subscriptions.
   * @param {number} [code=1000]
   * @param {string} [reason]
   */
  close(code = 1000, reason = "") {
    this._clearTimers();
    this._welcome = null;
    for (const entry of this._rooms.values()) entry.subscribed = false;
    this._failPending("closed", "the client was closed");
    this._failQueue("closed", "the client was closed");
    this._failWaiters("closed", "the client was closed");
    // Emits `close` (when a socket was open or opening), then the state `closed`.
    this._link.close(code, reason);
  }

  /**
   * Subscribes `handler` to a room: it receives the room's `message`, `join` and `leave`
   * frames. The subscription outlives reconnects, resuming from the last message seen.
   * Several handlers may share a room; the server is told once.
   * @param {string} room
   * @param {(frame: object) => void} handler
   * @param {{since?: StreamPosition, timeout?: number}} [options] `since`: resume from a
   *   position saved earlier (see `position()`), e.g. across page loads. `timeout`: reject
   *   with `timeout` if the server has not confirmed the room within this many ms (by
   *   default the promise waits for a connection as long as one may come); the room is
   *   kept, as after `disconnected`.
   * @returns {Promise<object>} the `ok` of the subscribe (`room`, `epoch`, `offset`,
   *   maybe `recovered`), once the server has it; rejected by an error reply, which also
   *   drops the room, except `unavailable` (the server cannot reach its backplane for
   *   now), after which the subscribe is sent again with backoff. While the client is
   *   (re)connecting it waits for the connection; when no connection is coming it is
   *   rejected with `disconnected` (the client gave up, `reconnect-failed`, or the server
   *   closed it for good) or `closed` (`close()` was called, or the room was
   *   unsubscribed). Those keep the room: it is joined with the next `connect()`. A
   *   subscribe made while the client is idle, failed or closed waits for that
   *   `connect()`.
   */
  subscribe(room, handler, options = {}) {
    let entry = this._rooms.get(room);
    if (!entry) {
      entry = {
        handlers: new Set(),
        epoch: options.since ? options.since.epoch : null,
        offset: options.since ? options.since.offset : 0,
        delivered: options.since ? options.since.offset : 0,
        subscribed: false,
        ok: null,
        waiters: [],
      };
      this._rooms.set(room, entry);
      if (this._state === "connected") this._sendSubscribe(room, entry, false);
    }
    if (handler) entry.handlers.add(handler);
    if (entry.subscribed) return Promise.resolve(entry.ok);
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      if (options.timeout !== undefined) {
        const timer = setTimeout(() => {
          const at = entry.waiters.indexOf(waiter);
          if (at < 0) return;
          entry.waiters.splice(at, 1);
          reject(new WshubError("timeout", `subscribe to ${room} not confirmed within ${options.timeout} ms`));
        }, options.timeout);
        waiter.resolve = (ok) => {
          clearTimeout(timer);
          resolve(ok);
        };
        waiter.reject = (error) => {
          clearTimeout(timer);
          reject(error);
        };
      }
      entry.waiters.push(waiter);
    });
  }

  /**
   * Removes `handler` from a room, or every handler when none is given; when the last one
   * goes, unsubscribes from the room.
   * @param {string} room
   * @param {Function} [handler]
   * @returns {Promise<void>}
   */
  async unsubscribe(room, handler) {
    const entry = this._rooms.get(room);
    if (!entry) return;
    if (handler) entry.handlers.delete(handler);
    else entry.handlers.clear();
    if (entry.handlers.size > 0) return;
    this._rooms.delete(room);
    for (const waiter of entry.waiters) {
      waiter.reject(new WshubError("closed", `unsubscribed from ${room}`));
    }
    if (this._state === "connected") {
      await this.request({ type: "unsubscribe", room });
    }
  }

  /**
   * The last position seen in a room (to save and pass as `since` later), or null.
   * @param {string} room
   * @returns {StreamPosition|null}
   */
  position(room) {
    const entry = this._rooms.get(room);
    if (!entry || entry.epoch === null) return null;
    return { epoch: entry.epoch, offset: entry.offset };
  }

  /**
   * Publishes to a room (every subscriber gets it, this client too if subscribed).
   *
   * While the client is connecting or reconnecting, the publish waits in the offline
   * queue (see `offlineQueueCapacity`) and is sent once the connection is back, right
   * after the rooms are subscribed again, in call order. Its timeout runs from this call,
   * queued time included: a publish that times out in the queue is never sent. A publish
   * already written when the connection drops is rejected with `disconnected` (it may or
   * may not have been delivered) and is not sent again.
   * @param {string} room
   * @param {any} data any JSON value
   * @param {{timeout?: number}} [options] the reply's timeout, in ms (default
   *   `requestTimeout`)
   * @returns {Promise<object>} the `ok`, with the message's `offset`; rejected with
   *   `offline_queue_full` when the queue has no room, `disconnected` when the client is
   *   not trying to connect (not connected yet, or gave up) or the queue is off, `closed`
   *   when `close()` is called while it is queued
   */
  publish(room, data, options) {
    return this._request({ type: "publish", room, data }, options, true);
  }

  /**
   * Sends to one connection, by its client id.
   * @param {string} to
   * @param {any} data
   * @param {{timeout?: number}} [options]
   * @returns {Promise<object>} the `ok`; rejected with `not_found` when no such connection
   */
  send(to, data, options) {
    return this.request({ type: "send", to, data }, options);
  }

  /**
   * Sends to every connection.
   * @param {any} data
   * @param {{timeout?: number}} [options]
   * @returns {Promise<object>}
   */
  broadcast(data, options) {
    return this.request({ type: "broadcast", data }, options);
  }

  /**
   * Who is in a room.
   * @param {string} room
   * @param {{timeout?: number}} [options]
   * @returns {Promise<object>} the `ok`, with `clients: [{client, user}]`
   */
  presence(room, options) {
    return this.request({ type: "presence", room }, options);
  }

  /**
   * A room's stored messages: the newest `limit` ones, or with `since` the oldest `limit`
   * ones after that position.
   * @param {string} room
   * @param {{since?: StreamPosition, limit?: number, timeout?: number}} [options]
   * @returns {Promise<object>} the `ok`, with `epoch` and `messages`
   */
  history(room, { since, limit, timeout } = {}) {
    const command = { type: "history", room };
    if (since) command.since = since;
    if (limit !== undefined) command.limit = limit;
    return this.request(command, { timeout });
  }

  /**
   * Measures a round trip.
   * @param {{timeout?: number}} [options]
   * @returns {Promise<number>} milliseconds between the `ping` and its `pong`
   */
  async ping(options) {
    const started = Date.now();
    await this.request({ type: "ping" }, options);
    return Date.now() - started;
  }

  /**
   * Sends any command with a fresh `id` and waits for the reply carrying it. The base of
   * every method above; use it for commands this class does not know yet.
   * @param {object} command a docs/PROTOCOL.md command without `id`
   * @param {{timeout?: number}} [options]
   * @returns {Promise<object>} the `ok` (or `pong`) frame; rejected with a WshubError
   *   carrying the error frame's `code`, or `timeout`, or `disconnected`
   */
  request(command, options) {
    return this._request(command, options, false);
  }

  /**
   * `request()`, and with `queue` (publishes) the offline queue: a command made while the
   * client is (re)connecting waits there for the next connection instead of failing.
   */
  _request(command, { timeout = this.options.requestTimeout } = {}, queue = false) {
    return new Promise((resolve, reject) => {
      // `id` is null until the command is written (it may wait in the offline queue).
      const job = { command, resolve, reject, timer: null, id: null, frame: null };
      job.frame = () => this._frame(job);
      const connected = this._state === "connected";
      // Queued if the client is working on a connection. "connected" here may be a socket
      // closing under us, its close not reported yet.
      const trying = this._state === "connecting" || this._state === "reconnecting" || connected;
      if (queue && trying) {
        // Written now, or queued by the link (behind what is queued already).
        if (this._link.send(job.frame)) {
          if (job.id === null) this._queue.add(job);
          this._armTimeout(job, timeout);
          return;
        }
        this._unregister(job);
        const capacity = this.options.offlineQueueCapacity;
        reject(
          capacity > 0
            ? new WshubError("offline_queue_full", `the offline publish queue is full (${capacity} messages)`)
            : new WshubError("disconnected", "not connected"),
        );
        return;
      }
      if (connected && this._link.send(job.frame, { queue: false })) {
        this._armTimeout(job, timeout);
        return;
      }
      this._unregister(job);
      reject(new WshubError("disconnected", connected ? "send failed" : "not connected"));
    });
  }

  /**
   * The command of `job` as written, with a fresh id under which it waits for its reply.
   * Called by the link when it writes the command: now, or from the offline queue.
   */
  _frame(job) {
    if (job.id !== null) this._pending.delete(job.id);
    this._queue.delete(job);
    job.id = this._nextId++;
    this._pending.set(job.id, job);
    return JSON.stringify({ ...job.command, id: job.id });
  }

  /** Forgets `job` wherever it waits: for its reply, or in the offline queue. */
  _unregister(job) {
    clearTimeout(job.timer);
    if (job.id !== null && this._pending.get(job.id) === job) this._pending.delete(job.id);
    job.id = null;
    this._queue.delete(job);
    this._link.cancel(job.frame);
  }

  /** Starts a request's timeout: it rejects the request, written or still queued. */
  _armTimeout(job, timeout) {
    job.timer = setTimeout(() => {
      const type = job.command.type;
      const written = job.id !== null && this._pending.get(job.id) === job;
      this._unregister(job);
      job.reject(
        written
          ? new WshubError("timeout", `no reply to ${type} within ${timeout} ms`)
          : new WshubError("timeout", `${type} not sent within ${timeout} ms: no connection`),
      );
    }, timeout);
  }

  // ---- connection lifecycle ----

  async _url() {
    let token = this.options.token;
    if (typeof token === "function") token = await token();
    let base = this.options.url;
    if (!base) {
      const location = globalThis.location;
      const scheme = location && location.protocol === "https:" ? "wss:" : "ws:";
      base = `${scheme}//${location ? location.host : "localhost"}${this.options.path}`;
    }
    if (!token) return base;
    const url = new URL(base);
    url.searchParams.set("token", token);
    return url.toString();
  }

  _onData(data) {
    if (typeof data !== "string") return; // the protocol has only text frames
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this._emit("error", new WshubError("bad_request", "the server sent a frame that is not JSON"));
      return;
    }
    if (!frame || typeof frame !== "object") return;
    this._emit("frame", frame);
    switch (frame.type) {
      case "welcome":
        this._onWelcome(frame);
        break;
      case "ok":
      case "pong":
      case "error":
        this._onReply(frame);
        break;
      case "message":
      case "join":
      case "leave":
        this._onRoomFrame(frame);
        break;
      case "unrecoverable":
        this._onUnrecoverable(frame);
        break;
      default:
        // `direct`, `broadcast`, and types this client does not know (new optional
        // features of a newer server): to whoever listens for them by name.
        if (typeof frame.type === "string" && !CLIENT_EVENTS.has(frame.type)) {
          this._emit(frame.type, frame);
        }
        if (ROUTED_TYPES.has(frame.type)) this._route(frame);
        break;
    }
  }

  _onWelcome(frame) {
    if (this._welcome) return; // one per connection
    this._welcome = frame;
    const reconnected = this._everConnected;
    this._everConnected = true;
    this._setState("connected");
    this._schedulePing();
    for (const [room, entry] of this._rooms) this._sendSubscribe(room, entry, reconnected);
    // After the subscribes, so that this client gets its own queued messages too: the link
    // writes its offline queue now. Before the event, so that what its listeners publish
    // goes after them.
    this._link.completeHandshake();
    this._emit(reconnected ? "reconnected" : "open", frame);
  }

  _onReply(frame) {
    const pending = frame.id === null || frame.id === undefined ? null : this._pending.get(frame.id);
    if (!pending) {
      if (frame.type === "error") {
        this._emit("error", new WshubError(frame.code, frame.message || frame.code, frame));
      }
      return;
    }
    this._pending.delete(frame.id);
    clearTimeout(pending.timer);
    if (frame.type === "error") {
      pending.reject(new WshubError(frame.code, frame.message || frame.code, frame));
    } else {
      pending.resolve(frame);
    }
  }

  _onRoomFrame(frame) {
    const entry = this._rooms.get(frame.room);
    if (!entry) return;
    if (frame.type === "message") {
      // Same epoch and an offset already delivered: a duplicate, never twice to the app.
      if (frame.epoch === entry.epoch && frame.offset <= entry.delivered) return;
      if (frame.epoch !== entry.epoch) {
        entry.epoch = frame.epoch;
        entry.offset = 0;
      }
      entry.delivered = frame.offset;
      entry.offset = Math.max(entry.offset, frame.offset);
    }
    for (const handler of [...entry.handlers]) this._call(handler, frame);
    this._emit(frame.type, frame);
    if (frame.type === "message") this._route(frame);
  }

  /** Gives a frame to the route handlers of its `data`'s `routeField`, if any. */
  _route(frame) {
    const data = frame.data;
    if (this._routes.size === 0 || !data || typeof data !== "object" || Array.isArray(data)) return;
    const handlers = this._routes.get(data[this.options.routeField]);
    if (!handlers) return;
    for (const handler of [...handlers]) {
      try {
        handler(data, frame);
      } catch (error) {
        this._report(error);
      }
    }
  }

  /**
   * The server lost publications of a room up to `epoch`/`offset` (a cluster's backplane
   * lost them): take that position, so that a later resubscribe does not report the same
   * loss again (never back within an epoch), then tell whoever listens for the event.
   */
  _onUnrecoverable(frame) {
    const entry = this._rooms.get(frame.room);
    if (entry && typeof frame.epoch === "string" && Number.isSafeInteger(frame.offset)) {
      if (frame.epoch !== entry.epoch) {
        entry.epoch = frame.epoch;
        entry.offset = frame.offset;
        entry.delivered = frame.offset;
      } else {
        entry.offset = Math.max(entry.offset, frame.offset);
        entry.delivered = Math.max(entry.delivered, frame.offset);
      }
    }
    this._emit("unrecoverable", frame);
  }

  _sendSubscribe(room, entry, resubscribed) {
    const command = { type: "subscribe", room };
    const since = entry.epoch !== null ? { epoch: entry.epoch, offset: entry.offset } : null;
    if (since) command.since = since;
    entry.subscribed = false;
    this.request(command).then(
      (ok) => {
        if (this._rooms.get(room) !== entry) return; // unsubscribed meanwhile
        if (!since || ok.epoch !== since.epoch) {
          // A fresh start, or the room's history was lost: take the server's position.
          // After a lost epoch the replay (if any) starts from offset 1 again.
          entry.epoch = ok.epoch;
          entry.delivered = since ? 0 : ok.offset;
          entry.offset = since ? 0 : ok.offset;
        }
        if (ok.recovered === false) {
          // Some messages are gone for good; resuming later from before the gap would
          // only report the same loss again.
          entry.offset = Math.max(entry.offset, ok.offset);
        }
        entry.unavailable = 0;
        entry.subscribed = true;
        entry.ok = ok;
        const waiters = entry.waiters.splice(0);
        for (const waiter of waiters) waiter.resolve(ok);
        this._emit("subscribed", {
          room,
          epoch: ok.epoch,
          offset: ok.offset,
          recovered: ok.recovered,
          lost: ok.recovered === false ? (Array.isArray(ok.lost) ? ok.lost : []) : undefined,
          resubscribed,
        });
      },
      (error) => {
        if (this._rooms.get(room) !== entry) return;
        if (error.code === "disconnected" || error.code === "timeout" || error.code === "closed") {
          // Tried again after the next reconnect; a timeout means the connection is bad.
          if (error.code === "timeout" && this._state === "connected") this._link.reconnect("subscribe timed out");
          return;
        }
        if (error.code === "unavailable") {
          // The server cannot reach its backplane for now: not a refusal. Tried again on
          // this connection after a jittered delay doubling from 100 ms up to 5 s (the
          // next connection subscribes anyway); the subscribe's own timeout still runs.
          entry.unavailable = (entry.unavailable || 0) + 1;
          const ceiling = Math.min(5000, 100 * 2 ** Math.min(entry.unavailable - 1, 6));
          const socket = this._socket;
          setTimeout(() => {
            if (this._rooms.get(room) === entry && this._socket === socket && this.state === "connected") {
              this._sendSubscribe(room, entry, resubscribed);
            }
          }, Math.random() * ceiling);
          return;
        }
        // The server refused the room (forbidden, bad name, too many rooms): drop it.
        this._rooms.delete(room);
        const waiters = entry.waiters.splice(0);
        for (const waiter of waiters) waiter.reject(error);
        if (waiters.length === 0) this._emit("error", error);
      },
    );
  }

  _schedulePing() {
    const { pingInterval, pongTimeout } = this.options;
    if (!pingInterval) return;
    const welcome = this._welcome;
    this._timers.ping = setTimeout(() => {
      this.request({ type: "ping" }, { timeout: pongTimeout }).then(
        () => {
          if (this._welcome === welcome) this._schedulePing();
        },
        (error) => {
          // A dead TCP connection can take minutes to report its close: replaced now.
          if (error.code === "timeout" && this._welcome === welcome) this._link.reconnect("no pong in time");
        },
      );
    }, pingInterval);
  }

  /** The link lost its socket: what waited on this connection fails; it may reconnect. */
  _onClose({ code, reason }) {
    this._lastClose = code;
    this._clearTimers();
    this._welcome = null;
    for (const entry of this._rooms.values()) entry.subscribed = false;
    this._failPending("disconnected", `connection closed (${code})`);
    this._emit("close", { code, reason });
  }

  /**
   * Follows the link's state; `connected` is this client's own (the `welcome`), the
   * link's `open` comes after it. When no connection is coming (gave up, or a final close
   * by the server), what waits for one is rejected.
   */
  _onLinkState(state) {
    if (state === "open") return;
    if (state === "failed") {
      const why = `gave up reconnecting after ${this._link.attempt - 1} attempts`;
      this._failQueue("disconnected", why);
      this._failWaiters("disconnected", why);
    } else if (state === "closed") {
      // After close() these are empty already.
      const why = `connection closed (${this._lastClose}), not reopened`;
      this._failQueue("disconnected", why);
      this._failWaiters("disconnected", why);
    }
    this._setState(state);
  }

  _clearTimers() {
    clearTimeout(this._timers.ping);
    this._timers.ping = null;
  }

  _failPending(code, message) {
    const pending = [...this._pending.values()];
    for (const job of pending) {
      this._unregister(job);
      job.reject(new WshubError(code, message));
    }
  }

  /** Rejects every publish of the offline queue: no connection will come to send them. */
  _failQueue(code, message) {
    const queued = [...this._queue];
    for (const job of queued) {
      this._unregister(job);
      job.reject(new WshubError(code, message));
    }
  }

  /**
   * Rejects every `subscribe()` still waiting for its room's `ok`: no connection will come
   * to answer it. The rooms stay, to be joined again by the next `connect()`.
   */
  _failWaiters(code, message) {
    for (const [room, entry] of this._rooms) {
      const waiters = entry.waiters.splice(0);
      for (const { reject } of waiters) reject(new WshubError(code, `subscribe to ${room}: ${message}`));
    }
  }

  _setState(state) {
    const previous = this._state;
    if (previous === state) return;
    this._state = state;
    this._emit("state", { state, previous, attempt: this._link.attempt });
  }

  _emit(event, value) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) this._call(listener, value);
  }

  /** Calls application code; its exceptions are reported, never break the client. */
  _call(fn, value) {
    try {
      fn(value);
    } catch (error) {
      this._report(error);
    }
  }

  _report(error) {
    if (typeof globalThis.reportError === "function") globalThis.reportError(error);
    else setTimeout(() => { throw error; });
  }
}
