// The React hooks, rendered in Node by react-test-renderer, against the real `wshub`
// binary, and `useWebSocket` against the library's echo example (a plain hub); the `ws`
// package as the WebSocket.
// Run with: node --test clients/js/test/react.test.mjs
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createElement, StrictMode } from "react";
import TestRenderer from "react-test-renderer";
import WebSocket from "ws";
import { createServer } from "node:net";

import { WshubClient } from "../src/wshub.js";
import { WebSocketClient } from "../src/websocket.js";
import { ReadyState, useRoom, useWebSocket, useWshub } from "../src/react.js";
import { startEcho, startServer, stopAll, waitFor, nextEvent } from "./support/server.mjs";

// react-test-renderer 19 warns once that it is deprecated; the warning is not about us.
const consoleError = console.error;
console.error = (...args) => {
  if (String(args[0]).includes("react-test-renderer is deprecated")) return;
  consoleError(...args);
};

let server;
let echo;
const renderers = [];
const owned = [];

before(async () => {
  server = await startServer();
  echo = await startEcho();
});

after(async () => {
  for (const renderer of renderers) renderer.unmount();
  for (const client of owned) client.close();
  console.error = consoleError;
  await stopAll();
});

const fast = { WebSocket, minReconnectDelay: 20, maxReconnectDelay: 200, requestTimeout: 3000 };

/**
 * Runs `fn` inside React's `act()`. Only then is this an "act environment": the updates
 * the server's frames cause later are rendered by React's scheduler as in a browser, and
 * the tests wait for them with `waitFor`.
 */
function act(fn) {
  globalThis.IS_REACT_ACT_ENVIRONMENT = true;
  try {
    TestRenderer.act(fn);
  } finally {
    globalThis.IS_REACT_ACT_ENVIRONMENT = false;
  }
}

/** A loopback port nothing listens on (taken by the system, then released). */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Renders `hook(props)` in a component; `latest()` is its newest return value. */
function renderHook(hook, props, { strict = false } = {}) {
  const results = [];
  function Probe(p) {
    results.push(hook(p));
    return null;
  }
  const element = (p) => (strict ? createElement(StrictMode, null, createElement(Probe, p)) : createElement(Probe, p));
  let renderer;
  act(() => {
    renderer = TestRenderer.create(element(props));
  });
  renderers.push(renderer);
  return {
    latest: () => results.at(-1),
    rerender: (next) => act(() => renderer.update(element(next))),
    unmount: () => act(() => renderer.unmount()),
  };
}

test("useWshub with a URL: connects, follows the state, keeps the last message, closes on unmount", { timeout: 15_000 }, async () => {
  const hook = renderHook(({ url }) => useWshub(url, fast), { url: server.ws }, { strict: true });
  await waitFor("connected", () => hook.latest().state === "connected");
  const { client, publish, send } = hook.latest();
  assert.ok(client instanceof WshubClient);
  assert.equal(hook.latest().lastMessage, null);

  // A direct message through the HTTP API becomes lastMessage.
  await server.api("POST", "/api/send", { to: client.clientId, data: { n: 1 } });
  await waitFor("lastMessage", () => hook.latest().lastMessage);
  assert.deepEqual(hook.latest().lastMessage, { type: "direct", from: null, data: { n: 1 } });

  await client.subscribe("react-url", () => {});
  const ok = await publish("react-url", { n: 2 });
  assert.equal(ok.offset, 1);
  await waitFor("the room message as lastMessage", () => hook.latest().lastMessage?.type === "message");
  await assert.rejects(send("nobody", 1), { code: "not_found" });
  // Stable across renders.
  assert.equal(hook.latest().publish, publish);

  hook.unmount();
  assert.equal(client.state, "closed");
});

test("useWshub with a client it does not own: connects it, never closes it", { timeout: 15_000 }, async () => {
  const client = new WshubClient({ url: server.ws, ...fast });
  owned.push(client);
  const hook = renderHook(({ c }) => useWshub(c), { c: client });
  await waitFor("connected", () => hook.latest().state === "connected");
  assert.equal(hook.latest().client, client);
  hook.unmount();
  assert.equal(client.state, "connected");
});

test("useRoom: members, messages, publish, and recovery across a server-side disconnect", { timeout: 20_000 }, async () => {
  const room = `react-room-${process.pid}`;
  const client = new WshubClient({ url: server.ws, ...fast, shouldReconnect: () => true });
  const other = new WshubClient({ url: server.ws, ...fast });
  owned.push(client, other);
  const otherOpen = nextEvent(other, "open");
  other.connect();
  await otherOpen;

  const hook = renderHook(
    ({ c }) => {
      const { client: live, state } = useWshub(c);
      return { state, ...useRoom(live, room) };
    },
    { c: client },
  );
  await waitFor("connected", () => hook.latest().state === "connected");
  await waitFor("itself among the members", () => hook.latest().members.some((m) => m.client === client.clientId));
  assert.equal(hook.latest().recovered, null);

  await other.subscribe(room, () => {});
  await waitFor("the other member's join", () => hook.latest().members.length === 2);

  await hook.latest().publish({ text: "one" });
  await other.publish(room, { text: "two" });
  await waitFor("two messages", () => hook.latest().messages.length === 2);
  assert.deepEqual(
    hook.latest().messages.map((m) => m.data.text),
    ["one", "two"],
  );

  // Dropped by the server; three messages are published while it is away.
  const firstId = client.clientId;
  const closed = nextEvent(client, "close");
  const reconnected = nextEvent(client, "subscribed", { timeout: 10_000, filter: (e) => e.resubscribed });
  await server.api("POST", "/api/disconnect", { client: firstId });
  await closed;
  for (const text of ["three", "four", "five"]) await other.publish(room, { text });
  await reconnected;
  await waitFor("the missed messages", () => hook.latest().messages.length === 5, { timeout: 5000 });
  assert.deepEqual(
    hook.latest().messages.map((m) => [m.data.text, m.offset]),
    [["one", 1], ["two", 2], ["three", 3], ["four", 4], ["five", 5]],
  );
  await waitFor("recovered", () => hook.latest().recovered === true);
  await waitFor("members after the reconnect", () =>
    hook.latest().members.some((m) => m.client === client.clientId) && !hook.latest().members.some((m) => m.client === firstId),
  );

  // The other member leaves.
  other.close();
  await waitFor("the leave", () => hook.latest().members.length === 1);

  // Unmounting leaves the room.
  hook.unmount();
  await waitFor("the room left", async () => {
    const reply = await server.api("GET", `/api/rooms/${room}/presence`);
    return reply.status === 200 && reply.body.clients.length === 0;
  });
});

test("useRoom: a client that gives up is no refusal; its next connect() joins the room", { timeout: 20_000 }, async () => {
  const room = `react-gave-up-${process.pid}`;
  // Nothing listens on this port: every attempt fails.
  const nowhere = await freePort();
  const client = new WshubClient({ ...fast, url: `ws://127.0.0.1:${nowhere}/ws`, maxReconnectAttempts: 2 });
  owned.push(client);
  const failed = nextEvent(client, "reconnect-failed", { timeout: 10_000 });
  const hook = renderHook(
    ({ c }) => {
      const { client: live, state } = useWshub(c);
      return { state, ...useRoom(live, room) };
    },
    { c: client },
  );
  await failed;
  await waitFor("state failed", () => hook.latest().state === "failed");

  // The same client, pointed at the server: the room the hook asked for is joined.
  client.options.url = server.ws;
  act(() => client.connect());
  await waitFor("itself among the members", () => hook.latest().members.some((m) => m.client === client.clientId), { timeout: 10_000 });
  assert.equal(hook.latest().error, null, "giving up is not the server refusing the room");
  await hook.latest().publish({ text: "after the retry" });
  await waitFor("the message", () => hook.latest().messages.length === 1);
  hook.unmount();
});

test("useRoom with no client or room does nothing", { timeout: 5000 }, () => {
  const hook = renderHook(() => useRoom(null, null), {});
  assert.deepEqual(hook.latest().messages, []);
  assert.deepEqual(hook.latest().members, []);
  assert.equal(hook.latest().recovered, null);
  return assert.rejects(hook.latest().publish("x"));
});

// ---- useWebSocket: any server ----

test("useWebSocket with a URL: connects, sends text and JSON, keeps the last message, closes on unmount", { timeout: 15_000 }, async () => {
  const heard = [];
  const opened = [];
  const hook = renderHook(
    ({ url }) =>
      useWebSocket(url, {
        WebSocket,
        minReconnectDelay: 20,
        onMessage: (event) => heard.push(event.data),
        onOpen: (event) => opened.push(event),
      }),
    { url: echo.ws },
    { strict: true },
  );
  await waitFor("connected", () => hook.latest().isConnected);
  const { readyState, client, sendMessage, sendJsonMessage } = hook.latest();
  assert.equal(readyState, ReadyState.OPEN);
  assert.ok(client instanceof WebSocketClient);
  assert.equal(hook.latest().lastMessage, null);
  assert.equal(hook.latest().lastJsonMessage, null);

  assert.equal(sendMessage("hello"), true);
  await waitFor("the echo as lastMessage", () => hook.latest().lastMessage?.data === "hello");
  assert.equal(hook.latest().lastJsonMessage, null, "not JSON");
  sendJsonMessage({ type: "tick", price: 42 });
  await waitFor("lastJsonMessage", () => hook.latest().lastJsonMessage?.price === 42);
  assert.deepEqual(hook.latest().lastJsonMessage, { type: "tick", price: 42 });
  assert.deepEqual(heard, ["hello", '{"type":"tick","price":42}']);
  assert.deepEqual(opened.at(-1), { reconnected: false });
  // Stable across renders.
  assert.equal(hook.latest().sendMessage, sendMessage);

  hook.unmount();
  assert.equal(client.state, "closed");
});

test("useWebSocket with a client it does not own: connects it, never closes it; route() on it", { timeout: 15_000 }, async () => {
  const client = new WebSocketClient(echo.ws, { WebSocket, minReconnectDelay: 20 });
  const notified = [];
  client.route("notification", (message) => notified.push(message.text));
  const hook = renderHook(({ c }) => useWebSocket(c), { c: client });
  await waitFor("connected", () => hook.latest().readyState === ReadyState.OPEN);
  assert.equal(hook.latest().client, client);
  hook.latest().sendJsonMessage({ type: "notification", text: "routed" });
  await waitFor("the routed echo", () => notified.length === 1);
  assert.deepEqual(hook.latest().lastJsonMessage, { type: "notification", text: "routed" });
  hook.unmount();
  assert.equal(client.state, "open");
  client.close();
});

test("useWebSocket: connect=false waits, a null URL does nothing, reconnects follow readyState", { timeout: 20_000 }, async () => {
  const nothing = renderHook(() => useWebSocket(null), {});
  assert.equal(nothing.latest().readyState, ReadyState.UNINSTANTIATED);
  assert.equal(nothing.latest().client, null);
  assert.equal(nothing.latest().sendMessage("x"), false);

  const own = await startEcho();
  const hook = renderHook(
    ({ go }) => useWebSocket(own.ws, { WebSocket, minReconnectDelay: 20, maxReconnectDelay: 100 }, go),
    { go: false },
  );
  assert.equal(hook.latest().readyState, ReadyState.UNINSTANTIATED);
  assert.equal(hook.latest().sendMessage("too early"), false, "not connecting: dropped");
  hook.rerender({ go: true });
  await waitFor("connected", () => hook.latest().isConnected);

  // The hub goes away: CONNECTING while the client retries; back on the same port: OPEN.
  await own.kill();
  await waitFor("reconnecting", () => hook.latest().readyState === ReadyState.CONNECTING);
  assert.equal(hook.latest().isConnected, false);
  assert.equal(hook.latest().sendMessage("queued"), true, "queued while reconnecting");
  const back = await startEcho({ port: own.port });
  await waitFor("open again", () => hook.latest().isConnected, { timeout: 10_000 });
  await waitFor("the queued message's echo", () => hook.latest().lastMessage?.data === "queued");
  hook.unmount();
  await back.kill();
});
