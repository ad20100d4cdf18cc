// React hooks for the wshub browser client, in a module of their own so that an
// application without React never loads it:
//
//   import { useWshub, useRoom, useWebSocket } from "wshub-client/react";
//
//   function Chat() {
//     const { state, client } = useWshub("wss://hub.example.com/ws", { token });
//     const { messages, members, publish, recovered } = useRoom(client, "chat:lobby");
//     ...
//   }
//
//   function Ticker() { // any WebSocket server, the names react-use-websocket users know
//     const { isConnected, lastJsonMessage, sendJsonMessage } = useWebSocket("/ws");
//     ...
//   }
//
// `react` is a peer dependency: these hooks use the application's own copy.
import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";

import { WebSocketClient } from "./websocket.js";
import { WshubClient } from "./wshub.js";

/** The frame types `lastMessage` follows: what other peers and backends send. */
const MESSAGE_TYPES = new Set(["message", "direct", "broadcast"]);

/**
 * A wshub connection for a component tree.
 *
 * With a URL (or a path starting with `/`, resolved against the page's host), the hook
 * creates its own client with `options` (read once, when the client is created; a new URL
 * makes a new client), connects it on mount and closes it on unmount. With a
 * `WshubClient`, it uses that one, connects it if it was never connected, and leaves
 * closing it to its owner. With nothing, it creates a client from `options` alone (by
 * default `/ws` on the page's host).
 *
 * @param {string|WshubClient|null|undefined} urlOrClient
 * @param {import("./wshub.js").WshubClientOptions} [options]
 * @returns {{state: string, lastMessage: object|null, send: Function, publish: Function,
 *   client: WshubClient}}
 */
export function useWshub(urlOrClient, options = {}) {
  const given = urlOrClient instanceof WshubClient ? urlOrClient : null;
  const url = given ? null : urlOrClient || null;
  const optionsRef = useRef(options);
  optionsRef.current = options;

  const client = useMemo(() => {
    if (given) return given;
    const settings = { ...optionsRef.current };
    if (url && url.startsWith("/")) settings.path = url;
    else if (url) settings.url = url;
    return new WshubClient(settings);
  }, [given, url]);

  useEffect(() => {
    if (given) {
      if (client.state === "idle") client.connect();
      return undefined;
    }
    // Mounted (or mounted again, e.g. by StrictMode): open; unmounted: close for good.
    client.connect();
    return () => client.close();
  }, [client, given]);

  const state = useSyncExternalStore(
    useCallback((onChange) => client.on("state", onChange), [client]),
    () => client.state,
    () => client.state,
  );

  const [lastMessage, setLastMessage] = useState(null);
  useEffect(() => {
    setLastMessage(null);
    return client.on("frame", (frame) => {
      if (MESSAGE_TYPES.has(frame.type)) setLastMessage(frame);
    });
  }, [client]);

  const send = useCallback((to, data, callOptions) => client.send(to, data, callOptions), [client]);
  const publish = useCallback((room, data, callOptions) => client.publish(room, data, callOptions), [client]);

  return { state, lastMessage, send, publish, client };
}

/**
 * One room of a client: its messages (live, and those replayed after a reconnect, each
 * once, oldest first), its members (from `presence` after every subscribe, then kept up
 * to date by `join` and `leave`), a `publish` bound to the room, and `recovered`: null
 * until a subscribe with recovery was answered, then whether every missed message came
 * back (false: some were lost while disconnected).
 *
 * The room is subscribed to while the component is mounted (the subscription is shared
 * with any other handler of the same room on that client) and left on unmount.
 *
 * @param {WshubClient|null|undefined} client the client, e.g. `useWshub(...).client`;
 *   nothing happens while it is null
 * @param {string|null|undefined} room nothing happens while it is null or empty
 * @param {{limit?: number}} [options] `limit`: how many messages to keep (the newest;
 *   default 200)
 * @returns {{messages: object[], members: {client: string, user: string|null}[],
 *   publish: Function, recovered: boolean|null, error: Error|null}}
 */
export function useRoom(client, room, options = {}) {
  const limit = options.limit ?? 200;
  const [messages, setMessages] = useState([]);
  const [members, setMembers] = useState([]);
  const [recovered, setRecovered] = useState(null);
  const [error, setError] = useState(null);

  useEffect(() => {
    setMessages([]);
    setMembers([]);
    setRecovered(null);
    setError(null);
    if (!client || !room) return undefined;
    let active = true;
    let sawSubscribed = false;

    const refreshMembers = () => {
      client.presence(room).then(
        (reply) => {
          if (active) setMembers(reply.clients);
        },
        () => {
          // Disconnected meanwhile: the next subscribe asks again.
        },
      );
    };
    const handler = (frame) => {
      if (!active) return;
      if (frame.type === "message") {
        setMessages((list) => {
          const next = list.concat([frame]);
          return next.length > limit ? next.slice(next.length - limit) : next;
        });
      } else if (frame.type === "join") {
        setMembers((list) =>
          list.some((m) => m.client === frame.client)
            ? list
            : list.concat([{ client: frame.client, user: frame.user ?? null }]),
        );
      } else if (frame.type === "leave") {
        setMembers((list) => list.filter((m) => m.client !== frame.client));
      }
    };
    // Who came and went while disconnected is not replayed: ask again after every
    // (re)subscribe.
    const offSubscribed = client.on("subscribed", (event) => {
      if (!active || event.room !== room) return;
      sawSubscribed = true;
      if (event.recovered !== undefined) setRecovered(event.recovered);
      refreshMembers();
    });
    client.subscribe(room, handler).then(
      () => {
        // A room some other handler of this client had already subscribed to fires
        // no `subscribed` event: ask here then.
        if (active && !sawSubscribed) refreshMembers();
      },
      (refused) => {
        // `disconnected` and `closed`: no connection came (the client gave up or was
        // closed); the room stays on the client's list and is joined with its next
        // connect(). Only the server's refusal is this room's error.
        if (!active || (refused && (refused.code === "disconnected" || refused.code === "closed"))) return;
        setError(refused);
      },
    );
    return () => {
      active = false;
      offSubscribed();
      client.unsubscribe(room, handler).catch(() => {
        // Disconnected: the server forgets the room with the connection.
      });
    };
  }, [client, room, limit]);

  const publish = useCallback(
    (data, callOptions) => {
      if (!client || !room) return Promise.reject(new Error("useRoom: no client or room"));
      return client.publish(room, data, callOptions);
    },
    [client, room],
  );

  return { messages, members, publish, recovered, error };
}

/**
 * The WebSocket ready states, as `useWebSocket` reports them (react-use-websocket's
 * names): `UNINSTANTIATED` when there is no client or it was never connected.
 */
export const ReadyState = Object.freeze({
  UNINSTANTIATED: -1,
  CONNECTING: 0,
  OPEN: 1,
  CLOSING: 2,
  CLOSED: 3,
});

/** `readyState` for each state of the plain client. */
const READY_STATES = {
  idle: ReadyState.UNINSTANTIATED,
  connecting: ReadyState.CONNECTING,
  reconnecting: ReadyState.CONNECTING,
  open: ReadyState.OPEN,
  failed: ReadyState.CLOSED,
  closed: ReadyState.CLOSED,
};

/** The options of `useWebSocket` that are callbacks, not the client's. */
const CALLBACKS = ["onOpen", "onClose", "onMessage", "onError"];

/**
 * A plain WebSocket connection (any server, not only wshub's protocol) for a component:
 * the plain client of websocket.js, with its reconnection, offline queue, heartbeat and
 * routing.
 *
 * With a URL (or a path starting with `/`), the hook creates its own client with
 * `options` (read once, when the client is created; a new URL makes a new client),
 * connects it on mount (unless `connect` is false) and closes it on unmount. With a
 * `WebSocketClient`, it uses that one, connects it if it was never connected, and leaves
 * closing it to its owner. With null, nothing happens.
 *
 * `options` takes the client's options and `onOpen`, `onClose`, `onMessage`, `onError`
 * (the latest ones are called). `lastMessage` is the newest message event (`.data`),
 * `lastJsonMessage` its data parsed (null when it is not JSON); `sendMessage` and
 * `sendJsonMessage` send now, or queue while (re)connecting (false: dropped).
 *
 * @param {string|WebSocketClient|null|undefined} urlOrClient
 * @param {object} [options]
 * @param {boolean} [connect=true]
 * @returns {{isConnected: boolean, readyState: number, lastMessage: {data: unknown}|null,
 *   lastJsonMessage: unknown, sendMessage: Function, sendJsonMessage: Function,
 *   client: WebSocketClient|null}}
 */
export function useWebSocket(urlOrClient, options = {}, connect = true) {
  const given = urlOrClient instanceof WebSocketClient ? urlOrClient : null;
  const url = given ? null : urlOrClient || null;
  const optionsRef = useRef(options);
  optionsRef.current = options;

  const client = useMemo(() => {
    if (given) return given;
    if (!url) return null;
    const settings = { ...optionsRef.current };
    for (const name of CALLBACKS) delete settings[name];
    return new WebSocketClient(url, settings);
  }, [given, url]);

  useEffect(() => {
    if (!client) return undefined;
    if (given) {
      if (client.state === "idle") client.connect();
      return undefined;
    }
    if (!connect) return undefined;
    // Mounted (or mounted again, e.g. by StrictMode): open; unmounted: close for good.
    client.connect();
    return () => client.close();
  }, [client, given, connect]);

  const state = useSyncExternalStore(
    useCallback((onChange) => (client ? client.on("state", onChange) : () => {}), [client]),
    () => (client ? client.state : null),
    () => (client ? client.state : null),
  );

  const [last, setLast] = useState({ message: null, json: null });
  useEffect(() => {
    setLast({ message: null, json: null });
    if (!client) return undefined;
    const call = (name, value) => {
      const callback = optionsRef.current[name];
      if (typeof callback === "function") callback(value);
    };
    const offs = [
      client.on("message", (event) => {
        let json = null;
        if (typeof event.data === "string") {
          try {
            json = JSON.parse(event.data);
          } catch {
            // Text that is not JSON: lastJsonMessage is null.
          }
        }
        setLast({ message: event, json });
        call("onMessage", event);
      }),
      client.on("open", (event) => call("onOpen", event)),
      client.on("close", (event) => call("onClose", event)),
      client.on("error", (error) => call("onError", error)),
    ];
    return () => {
      for (const off of offs) off();
    };
  }, [client]);

  const sendMessage = useCallback((data) => (client ? client.send(data) : false), [client]);
  const sendJsonMessage = useCallback((value) => (client ? client.sendJson(value) : false), [client]);

  return {
    isConnected: state === "open",
    readyState: state === null ? ReadyState.UNINSTANTIATED : READY_STATES[state],
    lastMessage: last.message,
    lastJsonMessage: last.json,
    sendMessage,
    sendJsonMessage,
    client,
  };
}
