// Compiled by `npm run typecheck` (tsc --noEmit), never run: the declarations must accept
// what the README and the demo page do, and refuse what the client would not accept.
import { WshubClient, WshubError, backoffDelay, reconnectsAfter } from "wshub-client";
import type { ConnectionState, LostRange, MessageFrame, RoomFrame, StreamPosition } from "wshub-client";
import { useRoom, useWshub } from "wshub-client/react";

const client = new WshubClient({
  path: "/ws",
  token: async () => "jwt",
  maxReconnectAttempts: 20,
  offlineQueueCapacity: 64,
  shouldReconnect: ({ code }) => code !== 1000,
});
const state: ConnectionState = client.state;
const id: string | null = client.clientId;
const extensions: string = client.extensions;
// @ts-expect-error read-only
client.extensions = "permessage-deflate";
const delay: number = backoffDelay(3, { min: 100 });
const again: boolean = reconnectsAfter(1011);

const off = client.on("reconnecting", ({ attempt, delay }) => console.log(attempt + delay));
off();
client.on("reconnect-failed", ({ attempts }) => console.log(attempts));
client.on("subscribed", (e) => {
  const recovered: boolean | undefined = e.recovered;
  const resubscribed: boolean = e.resubscribed;
  const lost: LostRange[] | undefined = e.lost;
  for (const range of lost ?? []) {
    const to: number | undefined = range.to;
    console.log(range.epoch, range.from, to);
  }
  console.log(recovered, resubscribed);
});
client.on("unrecoverable", (frame) => {
  const lost: LostRange[] | undefined = frame.lost;
  console.log(frame.epoch, frame.offset, lost);
});
client.on("open", (welcome) => console.log(welcome.client, welcome.ping_interval_ms));
client.on("close", ({ code, reason }) => console.log(code, reason));
client.on("error", (error) => console.log(error.message));
client.on("direct", (frame) => console.log(frame.from, frame.data));
client.on("some-future-type", (frame) => console.log(frame.type));
client.connect();

async function demo(): Promise<void> {
  const ok = await client.subscribe<{ text: string }>("chat", (frame: RoomFrame<{ text: string }>) => {
    if (frame.type === "message") {
      const text: string = frame.data.text;
      const offset: number = frame.offset;
      console.log(text, offset);
    } else {
      console.log(frame.client, frame.user);
    }
  });
  const since: StreamPosition = { epoch: ok.epoch, offset: ok.offset };
  await client.subscribe("chat", null, { since });
  await client.subscribe("chat", null, { since, timeout: 5000 });
  const published = await client.publish("chat", { text: "hi" }, { timeout: 1000 });
  const offset: number = published.offset;
  const presence = await client.presence("chat");
  const members: string[] = presence.clients.map((c) => c.client);
  const history = await client.history("chat", { since, limit: 10 });
  const old: MessageFrame[] = history.messages;
  const more: boolean | undefined = history.more;
  console.log(more);
  await client.send("someone", 1);
  await client.broadcast([1, 2]);
  const rtt: number = await client.ping();
  const position: StreamPosition | null = client.position("chat");
  await client.unsubscribe("chat");
  console.log(offset, members, old, rtt, position);
  try {
    await client.publish("chat", 1);
  } catch (error) {
    if (error instanceof WshubError && error.code === "timeout") console.log(error.frame);
  }
  try {
    await client.publish("chat", 2);
  } catch (error) {
    if (error instanceof WshubError && error.code === "offline_queue_full") console.log(error.message);
  }
  // @ts-expect-error room names are strings
  await client.publish(42, 1);
  // @ts-expect-error no such state
  const bad: ConnectionState = "open";
  console.log(bad);
}

function useChat(room: string) {
  const { state, lastMessage, send, publish, client: live } = useWshub("/ws", { token: "t" });
  useWshub(client);
  useWshub(null, { url: "ws://127.0.0.1:8080/ws" });
  const chat = useRoom<{ text: string }>(live, room, { limit: 50 });
  const texts: string[] = chat.messages.map((m) => m.data.text);
  const recovered: boolean | null = chat.recovered;
  void chat.publish({ text: "hello" });
  // @ts-expect-error the room's payload type
  void chat.publish({ txt: "hello" });
  void send("x", 1);
  void publish("room", 2);
  return { state, lastMessage, texts, recovered, members: chat.members };
}

console.log(state, id, extensions, delay, demo, useChat);
