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
