// Unit tests of the plain WebSocket client (websocket.js) against a fake WebSocket, with
// mocked timers. Its reconnection and wake-up paths are also exercised through the
// protocol client built on it (client.test.mjs), and against real servers in
// websocket.server.test.mjs.
// Run with: node --test clients/js/test/websocket.test.mjs
import { test, mock, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";

import { WebSocketClient, backoffDelay, reconnectsAfter } from "../src/websocket.js";
import * as wshub from "../src/wshub.js";

/** A fake WebSocket class whose instances the test drives by hand. */
function fakeWebSocket() {
  const sockets = [];
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error("not open");
      this.sent.push(data);
    }
    close(code, reason) {
      this.readyState = 3;
      this.closedWith = { code, reason };
    }
    // Test helpers: what the server would do.
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    receive(data) {
      this.onmessage?.({ data });
    }
    drop(code = 1006, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  }
  return { FakeSocket, sockets };
}

/** Lets pending promise callbacks run (setImmediate is not mocked). */
const flush = () => new Promise((resolve) => setImmediate(resolve));

let fake;
function newClient(options = {}, url = "ws://hub.test/ws") {
  return new WebSocketClient(url, { WebSocket: fake.FakeSocket, random: () => 0.5, ...options });
}

/** A client whose first socket is open. */
async function opened(options) {
  const client = newClient(options);
  client.connect();
  await flush();
  fake.sockets[0].open();
  return { client, socket: fake.sockets[0] };
}

beforeEach(() => {
  fake = fakeWebSocket();
  mock.timers.enable({ apis: ["setTimeout"] });
});

afterEach(() => {
  mock.timers.reset();
});

test("the protocol client shares the backoff and the close rule (one home)", () => {
  assert.equal(wshub.backoffDelay, backoffDelay);
  assert.equal(wshub.reconnectsAfter, reconnectsAfter);
});

test("open: states, the open event, protocols, and a URL function called for every attempt", async () => {
  let calls = 0;
  const client = newClient({ protocols: ["chat.v1"], minReconnectDelay: 100 }, async () => `ws://hub.test/ws?n=${++calls}`);
  const states = [];
  const opens = [];
  client.on("state", ({ state }) => states.push(state));
  client.on("open", (event) => opens.push(event));
  client.connect();
  await flush();
  assert.equal(fake.sockets[0].url, "ws://hub.test/ws?n=1");
  assert.deepEqual(fake.sockets[0].protocols, ["chat.v1"]);
  assert.equal(fake.sockets[0].binaryType, "arraybuffer");
  assert.equal(client.isConnected, false);
  fake.sockets[0].open();
  assert.equal(client.isConnected, true);
  fake.sockets[0].drop(1006);
  mock.timers.tick(50);
  await flush();
  assert.equal(fake.sockets[1].url, "ws://hub.test/ws?n=2");
  fake.sockets[1].open();
  assert.deepEqual(states, ["connecting", "open", "reconnecting", "open"]);
  assert.deepEqual(opens, [{ reconnected: false }, { reconnected: true }]);
});

test("a path is resolved against the page's host, wss: on an https: page", async () => {
  globalThis.location = { protocol: "https:", host: "app.example.com" };
  try {
    const client = newClient({}, "/live");
    client.connect();
    await flush();
    assert.equal(fake.sockets[0].url, "wss://app.example.com/live");
  } finally {
    delete globalThis.location;
  }
});

test("text, JSON, binary and emit are written as given once open", async () => {
  const { client, socket } = await opened();
  const bytes = new Uint8Array([1, 2, 255]);
  assert.equal(client.send("plain text"), true);
  assert.equal(client.sendJson({ type: "chat", text: "hi" }), true);
  assert.equal(client.send(bytes), true);
  assert.equal(client.emit("join", { room: "lobby" }), true);
  assert.deepEqual(socket.sent, ["plain text", '{"type":"chat","text":"hi"}', bytes, '{"type":"join","data":{"room":"lobby"}}']);
  assert.equal(socket.sent[2], bytes, "binary goes out as the same object, not copied or encoded");
});

test("offline queue: sends while connecting wait and go out in call order; bounded; dropped when not trying", async () => {
  const idle = newClient();
  assert.equal(idle.send("before connect()"), false, "nothing is queued for a connect() that may not come");

  const client = newClient({ offlineQueueCapacity: 3, minReconnectDelay: 1000 });
  client.connect();
  await flush();
  assert.equal(client.send("one"), true);
  assert.equal(client.sendJson({ n: 2 }), true);
  assert.equal(client.send(() => `three at write time`), true);
  assert.equal(client.send("four"), false, "the queue is full");
  assert.equal(client.queued, 3);
  assert.equal(client.cancel("one"), true);
  assert.equal(client.cancel("one"), false);
  assert.equal(client.send("five"), true);
  const socket = fake.sockets[0];
  // An open listener's send goes after what was queued.
  const off = client.on("open", () => {
    off();
    client.send("from the open listener");
  });
  socket.open();
  assert.deepEqual(socket.sent, ['{"n":2}', "three at write time", "five", "from the open listener"]);
  assert.equal(client.queued, 0);

  // Queued while reconnecting, written once on the next connection.
  socket.drop(1006);
  client.send("while away");
  mock.timers.tick(500);
  await flush();
  fake.sockets[1].open();
  assert.deepEqual(fake.sockets[1].sent, ["while away"]);

  // close() drops what is queued; a later connection sends nothing of it.
  fake.sockets[1].drop(1006);
  client.send("never");
  client.close();
  assert.equal(client.queued, 0);
  assert.equal(client.send("after close"), false);
  client.connect();
  await flush();
  fake.sockets[2].open();
  assert.deepEqual(fake.sockets[2].sent, []);
});

test("offline queue: capacity 0 turns it off; queue: false writes now or not at all", async () => {
  const client = newClient({ offlineQueueCapacity: 0 });
  client.connect();
  await flush();
  assert.equal(client.send("x"), false);
  assert.equal(client.send("y", { queue: false }), false);
  fake.sockets[0].open();
  assert.equal(client.send("z", { queue: false }), true);
  assert.deepEqual(fake.sockets[0].sent, ["z"]);
});

test("reconnection: full jitter under a growing cap, a maximum of attempts, then failed", async () => {
  const { client, socket } = await opened({ minReconnectDelay: 100, maxReconnectDelay: 300, maxReconnectAttempts: 4 });
  const events = [];
  client.on("reconnecting", (e) => events.push(e));
  client.on("reconnect-failed", (e) => events.push({ failed: e.attempts }));
  socket.drop(1006);
  for (const delay of [50, 100, 150, 150]) {
    mock.timers.tick(delay - 1);
    await flush();
    const before = fake.sockets.length;
    mock.timers.tick(1);
    await flush();
    assert.equal(fake.sockets.length, before + 1, `a new socket after ${delay} ms`);
    fake.sockets.at(-1).drop(1006);
  }
  assert.deepEqual(events, [
    { attempt: 1, delay: 50 },
    { attempt: 2, delay: 100 },
    { attempt: 3, delay: 150 }, // capped at 300, half of it
    { attempt: 4, delay: 150 },
    { failed: 4 },
  ]);
  assert.equal(client.state, "failed");
  assert.equal(client.send("x"), false);
});

test("closes for the client's own input and 1000 are final; shouldReconnect decides otherwise", async () => {
  for (const code of [1000, 1003, 1007, 1009]) {
    const { client, socket } = await opened();
    socket.drop(code);
    assert.equal(client.state, "closed", `after ${code}`);
    fake.sockets.length = 0;
  }
  const { client, socket } = await opened({ shouldReconnect: () => true, minReconnectDelay: 10 });
  socket.drop(1000);
  assert.equal(client.state, "reconnecting");
  client.close();
});

test("openTimeout: a socket that does not open in time is a failed attempt", async () => {
  const client = newClient({ openTimeout: 300 });
  client.connect();
  await flush();
  mock.timers.tick(300);
  assert.equal(fake.sockets[0].closedWith.code, 4000);
  assert.equal(client.state, "reconnecting");
});

test("heartbeat: a message every interval; the answer is not a message; silence means dead", async () => {
  const { client, socket } = await opened({
    heartbeat: { interval: 1000, timeout: 2500, message: { type: "ping" }, returnMessage: "pong" },
    minReconnectDelay: 100,
  });
  const messages = [];
  client.on("message", (event) => messages.push(event.data));
  mock.timers.tick(1000);
  assert.deepEqual(socket.sent, ['{"type":"ping"}']);
  socket.receive("pong");
  socket.receive("news");
  assert.deepEqual(messages, ["news"]);
  // Heard at 1000 ms: alive until 3500 ms.
  mock.timers.tick(1000);
  mock.timers.tick(1000);
  mock.timers.tick(499);
  assert.equal(socket.closedWith, null);
  assert.equal(socket.sent.length, 3, "pings at 1000, 2000 and 3000 ms");
  mock.timers.tick(1);
  assert.equal(socket.closedWith.code, 4000);
  assert.match(socket.closedWith.reason, /nothing received for 2500 ms/);
  assert.equal(client.state, "reconnecting");
  mock.timers.tick(50);
  await flush();
  assert.equal(fake.sockets.length, 2);
  client.close();
});

test("heartbeat: true takes the defaults (ping every 25 s, dead after 60 s of silence)", async () => {
  const { socket } = await opened({ heartbeat: true });
  mock.timers.tick(25_000);
  assert.deepEqual(socket.sent, ["ping"]);
  mock.timers.tick(35_000);
  assert.equal(socket.closedWith.code, 4000);
});

test("routing by a field of the JSON: route, json, a configurable field, non-JSON left alone", async () => {
  const { client, socket } = await opened();
  const seen = [];
  const off = client.route("notification", (m) => seen.push(["notification", m.text]));
  client.route("tick", (m) => seen.push(["tick", m.n]));
  client.on("json", (value) => seen.push(["json", typeof value]));
  socket.receive('{"type":"notification","text":"hello"}');
  socket.receive('{"type":"tick","n":1}');
  socket.receive('{"type":"other"}');
  socket.receive("not json");
  socket.receive("[1,2]");
  socket.receive(new ArrayBuffer(4));
  off();
  socket.receive('{"type":"notification","text":"unheard"}');
  assert.deepEqual(seen, [
    ["json", "object"],
    ["notification", "hello"],
    ["json", "object"],
    ["tick", 1],
    ["json", "object"],
    ["json", "object"],
    ["json", "object"],
  ]);

  const kinds = [];
  const other = newClient({ routeField: "kind" });
  other.connect();
  await flush();
  fake.sockets.at(-1).open();
  other.route("alert", (m) => kinds.push(m.kind));
  fake.sockets.at(-1).receive('{"kind":"alert","type":"notification"}');
  other.emit("ack", 7);
  assert.deepEqual(kinds, ["alert"]);
  assert.deepEqual(fake.sockets.at(-1).sent, ['{"kind":"ack","data":7}']);
});

test("a handler that throws breaks neither the client nor the other handlers", async () => {
  const { client, socket } = await opened();
  const reported = [];
  globalThis.reportError = (error) => reported.push(error.message);
  try {
    const seen = [];
    client.route("x", () => {
      throw new Error("app bug");
    });
    client.route("x", (m) => seen.push(m.n));
    socket.receive('{"type":"x","n":1}');
    assert.deepEqual(seen, [1]);
    assert.deepEqual(reported, ["app bug"]);
    assert.equal(client.state, "open");
  } finally {
    delete globalThis.reportError;
  }
});

test("handshake: open only at completeHandshake(); what was queued goes first; openTimeout covers it", async () => {
  const client = newClient({ handshake: true, openTimeout: 1000, minReconnectDelay: 100 });
  client.connect();
  await flush();
  client.send("queued before the greeting");
  const socket = fake.sockets[0];
  socket.open();
  assert.equal(client.state, "connecting");
  assert.equal(client.send("protocol frame", { queue: false }), true, "a protocol's own frames go at once");
  client.completeHandshake();
  assert.equal(client.state, "open");
  assert.deepEqual(socket.sent, ["protocol frame", "queued before the greeting"]);

  // No greeting on the next socket: the attempt fails after openTimeout.
  socket.drop(1006);
  mock.timers.tick(50);
  await flush();
  fake.sockets[1].open();
  mock.timers.tick(1000);
  assert.equal(fake.sockets[1].closedWith.code, 4000);
  assert.equal(client.state, "reconnecting");
});

test("reconnect() takes the connection for dead and reconnects after the backoff", async () => {
  const { client, socket } = await opened({ minReconnectDelay: 100 });
  const closes = [];
  client.on("close", (e) => closes.push(e));
  client.reconnect("no pong");
  assert.deepEqual(socket.closedWith, { code: 4000, reason: "no pong" });
  assert.deepEqual(closes, [{ code: 4000, reason: "no pong" }]);
  socket.drop(4000); // reported late by the socket: ignored
  assert.equal(closes.length, 1);
  mock.timers.tick(50);
  await flush();
  assert.equal(fake.sockets.length, 2);
  client.close();
});
