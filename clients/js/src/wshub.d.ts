// Type declarations of wshub.js, written by hand to match it; `npm run typecheck` checks
// them against test/types/usage.ts. Frame shapes follow docs/PROTOCOL.md.
import type { WebSocketConstructor, WebSocketLike } from "./websocket.js";

/** Any JSON value: what `data` carries. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * Connection states, in the order a connection usually goes through them: `idle` (created),
 * `connecting` (first connection), `connected` (welcome received), `reconnecting`
 * (waiting for or opening the next attempt), `failed` (attempts used up; `connect()`
 * starts over), `closed` (`close()` was called, or the server closed with a code that
 * `shouldReconnect` refused).
 */
export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "failed" | "closed";

/** A stream position in one room. */
export interface StreamPosition {
  epoch: string;
  offset: number;
}

/** The server's first frame on every connection. */
export interface WelcomeFrame {
  type: "welcome";
  client: string;
  user: string | null;
  ping_interval_ms: number;
  version: number;
  [field: string]: unknown;
}

/** A publish to a subscribed room. */
export interface MessageFrame<T = Json> {
  type: "message";
  room: string;
  data: T;
  /** The publisher's connection id; null when published through the HTTP API. */
  from: string | null;
  offset: number;
  epoch: string;
}

/** Another connection joined (`join`) or left (`leave`) a room this one is in. */
export interface PresenceFrame {
  type: "join" | "leave";
  room: string;
  client: string;
  user: string | null;
}

/** A `send` to this connection. */
export interface DirectFrame<T = Json> {
  type: "direct";
  from: string | null;
  data: T;
}

/**
 * A run of a room's offsets that were lost: `from` to `to`, both inclusive, in `epoch`.
 * `to` is absent when that epoch ended (the room's history was lost): every offset of
 * it from `from` on is gone.
 */
export interface LostRange {
  epoch: string;
  from: number;
  to?: number;
}

/**
 * The server lost publications of a room this connection is in (a cluster's backplane
 * lost them): those up to `epoch`/`offset` it has not received are gone; the next
 * `message` of the room follows `offset` in `epoch`.
 */
export interface UnrecoverableFrame {
  type: "unrecoverable";
  room: string;
  epoch: string;
  offset: number;
  recovered: false;
  /** Which offsets were lost, oldest first (absent from a server that does not say). */
  lost?: LostRange[];
}

/** A broadcast to every connection. */
export interface BroadcastFrame<T = Json> {
  type: "broadcast";
  from: string | null;
  data: T;
}

/** What a room handler receives. */
export type RoomFrame<T = Json> = MessageFrame<T> | PresenceFrame;

/** Any frame from the server (types a newer server adds included). */
export interface Frame {
  type: string;
  [field: string]: unknown;
}

/** The `ok` reply of a request; the fields depend on the command. */
export interface OkReply {
  type: "ok";
  id: number;
  [field: string]: unknown;
}

export interface SubscribeReply extends OkReply {
  room: string;
  epoch: string;
  /** The room's latest offset when the subscribe was accepted. */
  offset: number;
  /** Present when `since` was sent: whether every missed message is replayed. */
  recovered?: boolean;
  /** With `recovered: false`: the offsets neither replayed nor coming, oldest first. */
  lost?: LostRange[];
}

export interface PublishReply extends OkReply {
  room: string;
  offset: number;
}

export interface PresenceMember {
  client: string;
  user: string | null;
}

export interface PresenceReply extends OkReply {
  room: string;
  clients: PresenceMember[];
}

export interface HistoryReply extends OkReply {
  room: string;
  epoch: string;
  messages: MessageFrame[];
  /** Present when `since` was sent: whether the history reaches back to it. */
  recovered?: boolean;
  /**
   * True when the reply was cut to keep within the server's 1 MiB limit: more messages
   * follow; ask again with `since` the last message's position. Absent otherwise.
   */
  more?: boolean;
}

/** Options of a single request. */
export interface RequestOptions {
  /** How long to wait for the reply, in ms. Default: the client's `requestTimeout`. */
  timeout?: number;
}

export interface HistoryOptions extends RequestOptions {
  /** Messages after this position (the oldest `limit` of them); without it, the newest. */
  since?: StreamPosition;
  limit?: number;
}

export interface SubscribeOptions {
  /** Resume from a position saved earlier (see `position()`), e.g. across page loads. */
  since?: StreamPosition;
  /**
   * Reject with `timeout` when the server has not confirmed the room within this many ms
   * (the room is kept, as after `disconnected`). Default: wait as long as a connection
   * may come.
   */
  timeout?: number;
}

/** The `WebSocket` constructor the client uses: the browser's, or e.g. Node's `ws`. */
export type { WebSocketConstructor, WebSocketLike };

export interface WshubClientOptions {
  /** The WebSocket URL. Default: `ws(s)://<page host><path>`. */
  url?: string;
  /** The endpoint's path, used when `url` is not given. Default `/ws`. */
  path?: string;
  /**
   * A JWT, or a function returning one, called before every connection attempt (so it can
   * fetch a fresh token). Sent as the `token` query parameter.
   */
  token?: string | null | (() => string | null | undefined | Promise<string | null | undefined>);
  /** The first reconnect delay's cap, in ms. Default 500. */
  minReconnectDelay?: number;
  /** The cap of every reconnect delay, in ms. Default 30000. */
  maxReconnectDelay?: number;
  /** Attempts in a row before giving up (`reconnect-failed`). Default Infinity. */
  maxReconnectAttempts?: number;
  /** How long a connection must stay up before the attempt count starts over, in ms. Default 5000. */
  stableAfter?: number;
  /** How long a request waits for its reply, and a connection for `welcome`, in ms. Default 10000. */
  requestTimeout?: number;
  /** How often to send an application `ping`, in ms; 0 turns it off. Default 25000. */
  pingInterval?: number;
  /** How long to wait for its `pong` before reconnecting, in ms. Default 10000. */
  pongTimeout?: number;
  /**
   * How many publishes made while (re)connecting wait to be sent after reconnecting; one
   * more is rejected at once with `offline_queue_full`. 0 turns the queue off (such
   * publishes are rejected with `disconnected`). Default 256.
   */
  offlineQueueCapacity?: number;
  /**
   * Whether to reconnect after the server closed. Default: `reconnectsAfter(event.code)`
   * (not after 1000, 1003, 1007 or 1009).
   */
  shouldReconnect?: (event: CloseEvent) => boolean;
  /** The WebSocket constructor. Default: the global one. */
  WebSocket?: WebSocketConstructor;
  /** The jitter's source, in [0, 1). Default `Math.random`. */
  random?: () => number;
  /** The field of a frame's `data` that `route()` matches. Default `"type"`. */
  routeField?: string;
}

export interface CloseEvent {
  code: number;
  reason: string;
}

export interface ReconnectingEvent {
  /** 1 for the first attempt after a drop. */
  attempt: number;
  /** Milliseconds until the attempt. */
  delay: number;
}

export interface StateEvent {
  state: ConnectionState;
  previous: ConnectionState;
  attempt: number;
}

export interface SubscribedEvent {
  room: string;
  epoch: string;
  offset: number;
  /** Present when the subscribe carried `since`; false when messages were lost. */
  recovered: boolean | undefined;
  /**
   * With `recovered: false`: which offsets were lost, oldest first (empty when the server
   * does not say); undefined otherwise. Fetch just these from the application's source.
   */
  lost: LostRange[] | undefined;
  /** True when this is the automatic resubscribe after a reconnect. */
  resubscribed: boolean;
}

/** The client's events and what their listeners receive. */
export interface WshubEvents {
  open: WelcomeFrame;
  reconnected: WelcomeFrame;
  close: CloseEvent;
  reconnecting: ReconnectingEvent;
  "reconnect-failed": { attempts: number };
  state: StateEvent;
  error: WshubError | Error;
  subscribed: SubscribedEvent;
  message: MessageFrame;
  join: PresenceFrame;
  leave: PresenceFrame;
  direct: DirectFrame;
  broadcast: BroadcastFrame;
  /** The room's publications up to `epoch`/`offset` not received are lost; the room's
   * position moves there. */
  unrecoverable: UnrecoverableFrame;
  frame: Frame;
}

/**
 * Error codes of docs/PROTOCOL.md and the client's own (`timeout`, `disconnected`, `closed`,
 * `offline_queue_full`).
 */
export type WshubErrorCode =
  | "bad_request"
  | "unknown_type"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "rate_limited"
  | "limit_exceeded"
  | "internal"
  | "unavailable"
  | "timeout"
  | "disconnected"
  | "closed"
  | "offline_queue_full";

/** An error reply from the server, or a request that could not be answered. */
export class WshubError extends Error {
  constructor(code: string, message: string, frame?: object);
  name: "WshubError";
  /** A {@link WshubErrorCode}, or a code a newer server added. */
  code: WshubErrorCode | (string & {});
  /** The server's error frame, when there was one. */
  frame: object | undefined;
}

/** Re-exported from websocket.js: the reconnect delay with full jitter. */
export declare const backoffDelay: typeof import("./websocket.js").backoffDelay;

/** Re-exported from websocket.js: whether a close code calls for reconnecting. */
export declare const reconnectsAfter: typeof import("./websocket.js").reconnectsAfter;

/** A client of one wshub server: one WebSocket at a time, reopened when it drops. */
export class WshubClient {
  constructor(options?: WshubClientOptions);
  /** The options in effect, defaults filled in. */
  readonly options: Required<Omit<WshubClientOptions, "url" | "token" | "WebSocket">> &
    Pick<WshubClientOptions, "url" | "token" | "WebSocket">;
  readonly state: ConnectionState;
  /** The connection id the server gave this connection, or null when not connected. */
  readonly clientId: string | null;
  /** The user (`sub` of the token), or null. */
  readonly user: string | null;
  /** The current reconnect attempt (0 when connected or never dropped). */
  readonly attempt: number;
  /**
   * The WebSocket extensions the server accepted on the open connection (e.g.
   * `"permessage-deflate"`); `""` when none, or when no connection is open.
   */
  readonly extensions: string;

  /** Listens to an event; returns a function that removes the listener. */
  on<E extends keyof WshubEvents>(event: E, listener: (value: WshubEvents[E]) => void): () => void;
  /** Listens to frames of a type the client has no event of its own for. */
  on(event: string, listener: (frame: Frame) => void): () => void;
  off<E extends keyof WshubEvents>(event: E, listener: (value: WshubEvents[E]) => void): void;
  off(event: string, listener: (frame: Frame) => void): void;
  /**
   * Calls `handler(data, frame)` for every `message` (of a subscribed room, after its
   * handlers, each offset once), `direct` and `broadcast` frame whose `data` is an object
   * with `data[routeField]` (`type` by default) equal to `value`. Returns the remover.
   */
  route<T = { [field: string]: Json }>(
    value: unknown,
    handler: (data: T, frame: MessageFrame<T> | DirectFrame<T> | BroadcastFrame<T>) => void,
  ): () => void;

  /**
   * Opens the connection and keeps it open until `close()`. In a browser, a reconnect
   * waiting out its backoff is made at once on `online` or when the page becomes visible.
   */
  connect(): void;
  /**
   * Closes for good: no reconnection; pending requests, queued publishes and subscribes
   * waiting for their `ok` are rejected with `closed`.
   */
  close(code?: number, reason?: string): void;

  /**
   * Subscribes `handler` to a room; the subscription outlives reconnects, resuming from
   * the last message seen, and delivers each message once. Resolves to the subscribe's `ok`.
   * While (re)connecting it waits for the connection; rejected with the server's error
   * (which drops the room; `unavailable` is not an error here: the subscribe is sent again
   * with backoff until the server can reach its backplane), with `disconnected` when the client gives up or the server
   * closes it for good, with `closed` on `close()`, or with `timeout` after
   * `options.timeout` ms (those keep the room for the next connection). Made while idle,
   * failed or closed, it waits for `connect()`.
   */
  subscribe<T = Json>(
    room: string,
    handler?: ((frame: RoomFrame<T>) => void) | null,
    options?: SubscribeOptions,
  ): Promise<SubscribeReply>;
  /** Removes `handler` (or every handler); unsubscribes when none is left. */
  unsubscribe(room: string, handler?: (frame: RoomFrame<any>) => void): Promise<void>;
  /** The last position seen in a room, or null. */
  position(room: string): StreamPosition | null;

  /**
   * Publishes to a room. While (re)connecting, the publish waits in the offline queue and
   * is sent after the rooms are subscribed again; its timeout counts from this call.
   * Rejected with `offline_queue_full` when the queue is full, `disconnected` when the
   * client is not trying to connect or the queue is off, `closed` on `close()`.
   */
  publish(room: string, data: unknown, options?: RequestOptions): Promise<PublishReply>;
  send(to: string, data: unknown, options?: RequestOptions): Promise<OkReply>;
  broadcast(data: unknown, options?: RequestOptions): Promise<OkReply>;
  presence(room: string, options?: RequestOptions): Promise<PresenceReply>;
  history(room: string, options?: HistoryOptions): Promise<HistoryReply>;
  /** Resolves to the round trip in ms. */
  ping(options?: RequestOptions): Promise<number>;
  /** Sends any command with a fresh `id`; resolves to its `ok` (or `pong`) frame. */
  request<R extends Frame = OkReply>(command: { type: string; [field: string]: unknown }, options?: RequestOptions): Promise<R>;
}
