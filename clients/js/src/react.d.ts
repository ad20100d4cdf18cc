// Type declarations of react.js, written by hand to match it.
import type {
  ConnectionState,
  DirectFrame,
  BroadcastFrame,
  Json,
  MessageFrame,
  OkReply,
  PresenceMember,
  PublishReply,
  RequestOptions,
  WshubClient,
  WshubClientOptions,
} from "./wshub.js";
import type { SocketData, WebSocketClient, WebSocketClientOptions } from "./websocket.js";

export interface UseWshubResult {
  state: ConnectionState;
  /** The newest `message`, `direct` or `broadcast` frame, or null. */
  lastMessage: MessageFrame | DirectFrame | BroadcastFrame | null;
  send(to: string, data: unknown, options?: RequestOptions): Promise<OkReply>;
  publish(room: string, data: unknown, options?: RequestOptions): Promise<PublishReply>;
  client: WshubClient;
}

/**
 * A wshub connection for a component tree. With a URL (or a path starting with `/`), the
 * hook owns its client: created with `options` (read once), connected on mount, closed on
 * unmount. With a `WshubClient`, it connects it if it was never connected and never
 * closes it. With nothing, it creates a client from `options` alone.
 */
export function useWshub(urlOrClient?: string | WshubClient | null, options?: WshubClientOptions): UseWshubResult;

export interface UseRoomOptions {
  /** How many messages to keep (the newest). Default 200. */
  limit?: number;
}

export interface UseRoomResult<T = Json> {
  /** The room's messages since the hook mounted, each once, oldest first. */
  messages: MessageFrame<T>[];
  /** Who is in the room, this connection included. */
  members: PresenceMember[];
  publish(data: T, options?: RequestOptions): Promise<PublishReply>;
  /** null until a resubscribe with recovery was answered; false when messages were lost. */
  recovered: boolean | null;
  /**
   * The server's refusal of the subscribe (e.g. `forbidden`), or null. A client that gave
   * up or was closed is not a refusal: the room is joined with its next `connect()`.
   */
  error: Error | null;
}

/** One room of a client while the component is mounted; nothing happens while `client` or `room` is empty. */
export function useRoom<T = Json>(
  client: WshubClient | null | undefined,
  room: string | null | undefined,
  options?: UseRoomOptions,
): UseRoomResult<T>;

/** The WebSocket ready states as `useWebSocket` reports them (react-use-websocket's names). */
export declare const ReadyState: {
  readonly UNINSTANTIATED: -1;
  readonly CONNECTING: 0;
  readonly OPEN: 1;
  readonly CLOSING: 2;
  readonly CLOSED: 3;
};
export type ReadyStateValue = (typeof ReadyState)[keyof typeof ReadyState];

export interface UseWebSocketOptions extends WebSocketClientOptions {
  onOpen?: (event: { reconnected: boolean }) => void;
  onClose?: (event: { code: number; reason: string }) => void;
  /** Every message but the heartbeat's answer. */
  onMessage?: (event: { data: unknown }) => void;
  onError?: (error: Error) => void;
}

export interface UseWebSocketResult<T = unknown> {
  /** Whether the connection is open. */
  isConnected: boolean;
  /** `ReadyState.UNINSTANTIATED` without a client or before it connects. */
  readyState: ReadyStateValue;
  /** The newest message event (`data`: a string, or an ArrayBuffer for binary), or null. */
  lastMessage: { data: unknown } | null;
  /** The newest message's data parsed as JSON; null when it is not JSON. */
  lastJsonMessage: T | null;
  /** Sends now, or queues while (re)connecting; false when dropped. */
  sendMessage(data: SocketData): boolean;
  /** Sends `JSON.stringify(value)` (see `sendMessage`). */
  sendJsonMessage(value: unknown): boolean;
  /** The client, for `route()` and the rest; null with no URL. */
  client: WebSocketClient | null;
}

/**
 * A plain WebSocket connection for a component. With a URL (or a path starting with `/`),
 * the hook owns its client: created with `options` (read once, callbacks excepted),
 * connected on mount unless `connect` is false, closed on unmount. With a
 * `WebSocketClient`, it connects it if it was never connected and never closes it. With
 * null, nothing happens.
 */
export function useWebSocket<T = unknown>(
  urlOrClient: string | WebSocketClient | null | undefined,
  options?: UseWebSocketOptions,
  connect?: boolean,
): UseWebSocketResult<T>;
