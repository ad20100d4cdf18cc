// Type declarations of websocket.js, written by hand to match it; `npm run typecheck`
// checks them against test/types/usage.ts.

/** The `WebSocket` the client uses: the browser's, or e.g. Node's `ws`. */
export interface WebSocketLike {
  readonly readyState: number;
  /** The extensions the server accepted, once open. */
  readonly extensions?: string;
  /** Set to the `binaryType` option when that is given. */
  binaryType?: string;
  onopen?: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/**
 * `idle` (created), `connecting` (first connection), `open`, `reconnecting` (waiting for
 * or opening the next attempt), `failed` (`maxReconnectAttempts` used up; `connect()`
 * starts over), `closed` (`close()`, or a close `shouldReconnect` refused).
 */
export type SocketState = "idle" | "connecting" | "open" | "reconnecting" | "failed" | "closed";

/** What can be sent: text, or binary. */
export type SocketData = string | ArrayBufferLike | ArrayBufferView | Blob;

export interface HeartbeatOptions {
  /** How often to send `message`, in ms. Default 25000. */
  interval?: number;
  /**
   * How long the connection may receive nothing before it is taken for dead, closed (4000)
   * and replaced, in ms; 0 turns the check off. Default 60000.
   */
  timeout?: number;
  /**
   * What to send: a string or binary as is, anything else as JSON; a function is called
   * each time. Default `"ping"`.
   */
  message?: unknown;
  /** A message equal to this one (the server's answer) is not emitted. Default: none. */
  returnMessage?: unknown;
}

export interface WebSocketClientOptions {
  /** Subprotocols offered to the server. */
  protocols?: string | string[];
  /** The socket's `binaryType`. Default `"arraybuffer"`. */
  binaryType?: "arraybuffer" | "blob";
  /** The first reconnect delay's cap, in ms. Default 500. */
  minReconnectDelay?: number;
  /** The cap of every reconnect delay, in ms. Default 30000. */
  maxReconnectDelay?: number;
  /** Attempts in a row before giving up (`reconnect-failed`). Default Infinity. */
  maxReconnectAttempts?: number;
  /** How long a connection must stay open before the attempt count starts over, in ms. Default 5000. */
  stableAfter?: number;
  /**
   * How long a socket may take to open (with `handshake`, until `completeHandshake()`)
   * before the attempt counts as failed, in ms; 0 waits as long as the browser does.
   * Default 10000.
   */
  openTimeout?: number;
  /**
   * How many messages sent while (re)connecting wait to be written once open; one more is
   * dropped (`send` returns false). 0 turns the queue off. Default 256.
   */
  offlineQueueCapacity?: number;
  /** An application-level heartbeat; `true` for the defaults. Default: off. */
  heartbeat?: boolean | HeartbeatOptions;
  /** The field of a JSON message that `route()` matches and `emit()` sets. Default `"type"`. */
  routeField?: string;
  /**
   * The connection counts as open only when `completeHandshake()` is called (for protocols
   * that greet first). Default false: at the socket's `open`.
   */
  handshake?: boolean;
  /**
   * Whether to reconnect after a close. Default: `reconnectsAfter(event.code)` (not after
   * 1000, 1003, 1007 or 1009).
   */
  shouldReconnect?: (event: { code: number; reason: string }) => boolean;
  /** The WebSocket constructor. Default: the global one. */
  WebSocket?: WebSocketConstructor;
  /** The jitter's source, in [0, 1). Default `Math.random`. */
  random?: () => number;
}

/** A transport error: the socket's `error` event (`event`) carries no detail. */
export interface WebSocketError extends Error {
  name: "WebSocketError";
  event: unknown;
}

/** The client's events and what their listeners receive. */
export interface WebSocketClientEvents {
  /** The connection is open; `reconnected` is false the first time. */
  open: { reconnected: boolean };
  close: { code: number; reason: string };
  /** Every message but the heartbeat's answer: the socket's event (`data`: string, or ArrayBuffer/Blob). */
  message: { data: unknown };
  /** Every text message that parses as JSON, parsed. */
  json: unknown;
  reconnecting: { attempt: number; delay: number };
  "reconnect-failed": { attempts: number };
  state: { state: SocketState; previous: SocketState; attempt: number };
  error: WebSocketError | Error;
}

/**
 * The delay before reconnect attempt `attempt` (1 for the first): a random delay between 0
 * and `min(max, min * 2^(attempt-1))` ms.
 */
export function backoffDelay(
  attempt: number,
  options?: { min?: number; max?: number; random?: () => number },
): number;

/**
 * Whether a close with this code calls for reconnecting: false for 1000 (closed on
 * purpose) and for 1003, 1007 and 1009 (the client's own input was refused), true for
 * every other code. The default of `shouldReconnect`.
 */
export function reconnectsAfter(code: number): boolean;

/** One WebSocket at a time to one URL, reopened when it drops. */
export class WebSocketClient {
  /**
   * @param url `ws://` or `wss://` URL, a path starting with `/` (on the page's host), or a
   *   function returning one, called before every attempt
   */
  constructor(url: string | (() => string | Promise<string>), options?: WebSocketClientOptions);
  /** The options in effect, defaults filled in. */
  readonly options: Required<Omit<WebSocketClientOptions, "protocols" | "WebSocket">> &
    Pick<WebSocketClientOptions, "protocols" | "WebSocket">;
  /** The URL, path or function given to the constructor (read at every attempt). */
  url: string | (() => string | Promise<string>);
  readonly state: SocketState;
  /** Whether the connection is open (messages are written at once). */
  readonly isConnected: boolean;
  /** The current reconnect attempt (0 when connected or never dropped). */
  readonly attempt: number;
  /** How many messages wait in the offline queue. */
  readonly queued: number;
  /** The current WebSocket (open or opening), or null. */
  readonly socket: WebSocketLike | null;
  /** The extensions the server accepted on the open socket; `""` when none or not open. */
  readonly extensions: string;

  /** Listens to an event; returns a function that removes the listener. */
  on<E extends keyof WebSocketClientEvents>(event: E, listener: (value: WebSocketClientEvents[E]) => void): () => void;
  off<E extends keyof WebSocketClientEvents>(event: E, listener: (value: WebSocketClientEvents[E]) => void): void;
  /**
   * Calls `handler` with every JSON object received whose `routeField` (`type` by default)
   * is `value`. Returns the remover.
   */
  route<T = { [field: string]: unknown }>(value: unknown, handler: (message: T) => void): () => void;

  /**
   * Opens the connection and keeps it open until `close()`. In a browser, a reconnect
   * waiting out its backoff is made at once on `online` or when the page becomes visible.
   */
  connect(): void;
  /** Closes for good: no reconnection, the offline queue is emptied. */
  close(code?: number, reason?: string): void;
  /** Takes the connection for dead: closes it (4000) and reconnects after the backoff. */
  reconnect(reason?: string): void;

  /**
   * Sends text (a string) or binary; a function is called when the message is written. Not
   * open yet: queued, written in call order once open. Returns false when dropped (queue
   * full or off, not connecting, or with `queue: false` not open).
   */
  send(data: SocketData | (() => SocketData), options?: { queue?: boolean }): boolean;
  /** Sends `JSON.stringify(value)` (see `send`). */
  sendJson(value: unknown): boolean;
  /** Sends `{[routeField]: type, data}` as JSON. */
  emit(type: string, data?: unknown): boolean;
  /** Removes a message still in the offline queue (the oldest `===` one); whether it was there. */
  cancel(data: unknown): boolean;
  /** With `handshake: true`: the greeting arrived, the connection is open. */
  completeHandshake(): void;
}

/**
 * 1012, the close code of a draining server (service restart). After it the client
 * reconnects promptly: the next attempt is the first of a new run (a random delay up to
 * `minReconnectDelay`), not a failure's backoff.
 */
export const SERVICE_RESTART: 1012;
