// Compiled by `npm run typecheck` (tsc --noEmit), never run: the plain client's and
// useWebSocket's declarations must accept what the README does, and refuse what the
// client would not accept.
import { WebSocketClient, backoffDelay, reconnectsAfter } from "wshub-client/websocket";
import type { SocketState, WebSocketClientOptions } from "wshub-client/websocket";
import { WshubClient } from "wshub-client";
import { ReadyState, useWebSocket } from "wshub-client/react";

const options: WebSocketClientOptions = {
  heartbeat: { interval: 20_000, timeout: 45_000, message: "ping", returnMessage: "pong" },
  offlineQueueCapacity: 100,
  maxReconnectDelay: 10_000,
  routeField: "kind",
  protocols: ["chat.v1"],
};
const client = new WebSocketClient("/ws", options);
const tokened = new WebSocketClient(async () => `wss://hub.example.com/ws?token=${await Promise.resolve("t")}`);
const state: SocketState = client.state;
const connected: boolean = client.isConnected;
const queued: number = client.queued;
// @ts-expect-error read-only
client.isConnected = true;
client.on("open", ({ reconnected }) => console.log(reconnected));
client.on("message", (event) => console.log(event.data));
client.on("json", (value) => console.log(value));
client.on("close", ({ code, reason }) => console.log(code, reason));
client.on("reconnecting", ({ attempt, delay }) => console.log(attempt + delay));
client.on("error", (error) => console.log(error.message));
const off = client.route<{ type: "notification"; text: string }>("notification", (message) => console.log(message.text));
off();
client.connect();
const sent: boolean = client.send("text");
client.send(new Uint8Array([1, 2, 3]));
client.send(new ArrayBuffer(8));
client.send(() => JSON.stringify({ at: Date.now() }));
client.sendJson({ type: "chat", text: "hi" });
client.emit("join", { room: "lobby" });
client.cancel("text");
client.reconnect("dead");
client.close(1000, "bye");
// @ts-expect-error not something a socket sends
client.send(42);
// @ts-expect-error no such state
const bad: SocketState = "connected";
const delay: number = backoffDelay(2);
const again: boolean = reconnectsAfter(1006);

// The protocol client routes by a field of a frame's data.
const wshub = new WshubClient({ routeField: "type" });
wshub.route<{ type: "notification"; text: string }>("notification", (data, frame) => console.log(data.text, frame.type));

function Live() {
  const { isConnected, readyState, lastMessage, lastJsonMessage, sendMessage, sendJsonMessage, client: live } =
    useWebSocket<{ price: number }>("/ws", { heartbeat: true, onMessage: (event) => console.log(event.data) });
  const open: boolean = readyState === ReadyState.OPEN;
  const price: number | undefined = lastJsonMessage?.price;
  sendMessage("hello");
  sendJsonMessage({ subscribe: "prices" });
  useWebSocket(client);
  useWebSocket(null);
  useWebSocket("/ws", {}, false);
  live?.route("tick", () => {});
  return { isConnected, open, price, data: lastMessage?.data };
}

console.log(state, connected, queued, sent, bad, delay, again, tokened, Live);
