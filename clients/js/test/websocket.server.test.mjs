// The plain WebSocket client (websocket.js) against a hub built with the library: the
// `echo` example (crates/wshub/examples/echo.rs), which sends every message back as is,
// text or binary, and speaks no protocol of its own. Over real sockets, in Node with the
// `ws` package as the WebSocket.
// Run with: node --test clients/js/test/websocket.server.test.mjs (test.sh builds the
// example first).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import WebSocket from "ws";

import { WebSocketClient } from "../src/websocket.js";
import { startEcho, stopAll, waitFor, nextEvent } from "./support/server.mjs";

let echo;
const clients = [];

before(async () => {
  echo = await startEcho();
});

after(async () => {
  for (const client of clients) client.close();
  await stopAll();
});

const fast = { WebSocket, minReconnectDelay: 20, maxReconnectDelay: 200, openTimeout: 3000 };

/** A client of `url`, open; closed by the `after` hook. */
async function open(url, options = {}) {
  const client = new WebSocketClient(url, { ...fast, ...options });
  clients.push(client);
  const opened = nextEvent(client, "open");
  client.connect();
  await opened;
  return client;
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

test("text, JSON routed by its type, binary and emit, through a plain hub", { timeout: 15_000 }, async () => {
  const client = await open(echo.ws);
  const texts = [];
  const binaries = [];
  const notifications = [];
  client.on("message", ({ data }) => (typeof data === "string" ? texts.push(data) : binaries.push(data)));
  client.route("notification", (message) => notifications.push(message.text));

  assert.equal(client.send("plain text"), true);
  client.sendJson({ type: "notification", text: "you have mail" });
  client.send(new Uint8Array([0, 1, 2, 253, 254, 255]));
  client.emit("notification", { n: 1 });
  await waitFor("the four echoes", () => texts.length + binaries.length === 4);
  assert.deepEqual(texts, ["plain text", '{"type":"notification","text":"you have mail"}', '{"type":"notification","data":{"n":1}}']);
  assert.deepEqual(notifications, ["you have mail", undefined]);
  assert.ok(binaries[0] instanceof ArrayBuffer, "binary arrives as an ArrayBuffer");
  assert.deepEqual([...new Uint8Array(binaries[0])], [0, 1, 2, 253, 254, 255]);
});

test("messages sent while the hub is down are sent once it is back on the same port, once each, in order", { timeout: 30_000 }, async () => {
  const own = await startEcho();
  const client = await open(own.ws, { maxReconnectDelay: 100 });
  const received = [];
  client.on("message", ({ data }) => received.push(data));
  client.send("before");
  await waitFor("the first echo", () => received.length === 1);

  const closed = nextEvent(client, "close");
  await own.kill();
  await closed;
  assert.notEqual(client.state, "open");
  for (const n of [1, 2, 3]) assert.equal(client.sendJson({ n }), true);
  assert.equal(client.queued, 3);

  const back = await startEcho({ port: own.port });
  try {
    await waitFor("the queued messages' echoes", () => received.length === 4, { timeout: 10_000 });
    assert.deepEqual(received, ["before", '{"n":1}', '{"n":2}', '{"n":3}']);
    assert.equal(client.queued, 0);
    client.send("after");
    await waitFor("the echo after", () => received.length === 5);
    assert.equal(received.at(-1), "after");
  } finally {
    client.close();
    await back.kill();
  }
});

test("heartbeat: a hub that stops answering is noticed and reconnected to", { timeout: 30_000 }, async () => {
  const own = await startEcho();
  // The echo hub answers "ping" with "ping": the answer keeps the connection alive and is
  // not a message.
  const client = await open(own.ws, { heartbeat: { interval: 100, timeout: 600, message: "ping", returnMessage: "ping" } });
  const messages = [];
  client.on("message", ({ data }) => messages.push(data));
  // Alive for well over the timeout thanks to the answers.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  assert.equal(client.state, "open");
  assert.deepEqual(messages, [], "the heartbeat's answers are not messages");

  const closed = nextEvent(client, "close", { timeout: 10_000 });
  own.freeze();
  try {
    const { code, reason } = await closed;
    assert.equal(code, 4000);
    assert.match(reason, /nothing received for 600 ms/);
    const reopened = nextEvent(client, "open", { timeout: 10_000 });
    own.thaw();
    assert.deepEqual(await reopened, { reconnected: true });
  } finally {
    own.thaw();
    client.close();
    await own.kill();
  }
});

test("gives up after the maximum number of attempts; connect() starts over", { timeout: 20_000 }, async () => {
  const nowhere = await freePort();
  const client = new WebSocketClient(`ws://127.0.0.1:${nowhere}/`, { ...fast, maxReconnectAttempts: 2 });
  clients.push(client);
  const failed = nextEvent(client, "reconnect-failed", { timeout: 10_000 });
  client.connect();
  assert.deepEqual(await failed, { attempts: 2 });
  assert.equal(client.state, "failed");
  assert.equal(client.send("dropped"), false);

  // The same client pointed at a hub: connect() starts over.
  client.url = echo.ws;
  const opened = nextEvent(client, "open");
  client.connect();
  await opened;
  assert.equal(client.isConnected, true);
});
