// Unit tests of the browser client against a fake WebSocket, with mocked timers.
// Run with: node --test clients/js/test/ (from the repository root), or npm test in clients/js
import { test, mock, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";

import { WshubClient, WshubError, backoffDelay, reconnectsAfter } from "../src/wshub.js";

/** A fake WebSocket class whose instances the test drives by hand. */
function fakeWebSocket() {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      this.extensions = "";
      sockets.push(this);
    }
    send(data) {
      this.sent.push(JSON.parse(data));
    }
    close(code, reason) {
      this.readyState = 3;
      this.closedWith = { code, reason };
    }
    // Test helpers: what the server would do.
    welcome(client = "c1") {
      this.readyState = 1;
      this.receive({ type: "welcome", client, user: null, ping_interval_ms: 25000, version: 1 });
    }
    receive(frame) {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }
    reply(command, fields = {}) {
      this.receive({ type: command.type === "ping" ? "pong" : "ok", id: command.id, ...fields });
    }
    drop(code = 1006, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
    last(type) {
      return this.sent.filter((c) => c.type === type).at(-1);
    }
  }
  return { FakeSocket, sockets };
}

/** Lets pending promise callbacks run (setImmediate is not mocked). */
const flush = () => new Promise((resolve) => setImmediate(resolve));

let fake;
function newClient(options = {}) {
  return new WshubClient({
    url: "ws://hub.test/ws",
    WebSocket: fake.FakeSocket,
    random: () => 0.5,
    pingInterval: 0,
    ...options,
  });
}

/** A client connected on its first socket. */
async function connected(options) {
  const client = newClient(options);
  client.connect();
  await flush();
  fake.sockets[0].welcome();
  return { client, socket: fake.sockets[0] };
}

beforeEach(() => {
  fake = fakeWebSocket();
  mock.timers.enable({ apis: ["setTimeout"] });
});

afterEach(() => {
  mock.timers.reset();
});

test("backoff: full jitter under an exponentially growing cap", () => {
  const top = () => 0.999999;
  const caps = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelay(n, { min: 500, max: 30000, random: top }));
  assert.deepEqual(caps, [499, 999, 1999, 3999, 7999, 15999, 29999, 29999]);
  assert.equal(backoffDelay(3, { min: 500, max: 30000, random: () => 0 }), 0);
  assert.equal(backoffDelay(3, { min: 500, max: 30000, random: () => 0.5 }), 1000);
  // Huge attempt counts neither overflow nor exceed the cap.
  assert.equal(backoffDelay(10_000, { min: 500, max: 30000, random: () => 0.5 }), 15000);
  assert.equal(backoffDelay(0, { min: 500, max: 30000, random: () => 0.5 }), 250);
});

test("connect: the url carries the token, states go connecting then connected", async () => {
  const states = [];
  const client = newClient({ token: async () => "a b&c" });
  client.on("state", ({ state }) => states.push(state));
  const opened = [];
  client.on("open", (welcome) => opened.push(welcome.client));
  client.connect();
  await flush();
  assert.equal(fake.sockets.length, 1);
  assert.equal(new URL(fake.sockets[0].url).searchParams.get("token"), "a b&c");
  fake.sockets[0].welcome("abc");
  assert.deepEqual(states, ["connecting", "connected"]);
  assert.deepEqual(opened, ["abc"]);
  assert.equal(client.clientId, "abc");
});

test("requests are settled by the reply with their id, in any order", async () => {
  const { client, socket } = await connected();
  const first = client.publish("lobby", { n: 1 });
  const second = client.presence("lobby");
  const [publish, presence] = socket.sent;
  assert.equal(publish.type, "publish");
  assert.deepEqual(publish.data, { n: 1 });
  assert.notEqual(publish.id, presence.id);

  socket.reply(presence, { room: "lobby", clients: [{ client: "c1", user: null }] });
  socket.receive({ type: "ok", id: 9999 }); // nobody's: ignored
  socket.reply(publish, { room: "lobby", offset: 7 });
  assert.equal((await first).offset, 7);
  assert.deepEqual((await second).clients, [{ client: "c1", user: null }]);
});

test("an error reply rejects with its code; an error without id is an event", async () => {
  const { client, socket } = await connected();
  const errors = [];
  client.on("error", (error) => errors.push(error));
  const sent = client.send("nobody", "hi");
  const command = socket.last("send");
  socket.receive({ type: "error", id: command.id, code: "not_found", message: "no such connection" });
  await assert.rejects(sent, (error) => error instanceof WshubError && error.code === "not_found");
  socket.receive({ type: "error", id: null, code: "bad_request", message: "not JSON" });
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "bad_request");
});

test("a request without a reply times out; a dropped connection rejects the rest", async () => {
  const { client, socket } = await connected({ requestTimeout: 1000 });
  const timedOut = client.history("lobby", { limit: 5 });
  assert.deepEqual(socket.last("history"), { type: "history", room: "lobby", limit: 5, id: 1 });
  mock.timers.tick(1000);
  await assert.rejects(timedOut, { code: "timeout" });

  const dropped = client.broadcast({ hello: true });
  socket.drop(1006);
  await assert.rejects(dropped, { code: "disconnected" });
  // Only publishes wait for the next connection (the offline queue); the rest fail at once.
  await assert.rejects(client.presence("lobby"), { code: "disconnected" });
});

test("reconnection follows the backoff schedule and gives up after the maximum", async () => {
  const { client, socket } = await connected({
    minReconnectDelay: 100,
    maxReconnectDelay: 1000,
    maxReconnectAttempts: 3,
  });
  const events = [];
  client.on("reconnecting", (e) => events.push(e));
  client.on("reconnect-failed", (e) => events.push({ failed: e.attempts }));

  socket.drop(1001, "going away");
  assert.equal(client.state, "reconnecting");
  assert.deepEqual(events, [{ attempt: 1, delay: 50 }]);
  mock.timers.tick(49);
  await flush();
  assert.equal(fake.sockets.length, 1);
  mock.timers.tick(1);
  await flush();
  assert.equal(fake.sockets.length, 2);

  fake.sockets[1].drop(1006);
  mock.timers.tick(100);
  await flush();
  fake.sockets[2].drop(1006);
  mock.timers.tick(200);
  await flush();
  fake.sockets[3].drop(1006);
  assert.deepEqual(events, [
    { attempt: 1, delay: 50 },
    { attempt: 2, delay: 100 },
    { attempt: 3, delay: 200 },
    { failed: 3 },
  ]);
  assert.equal(client.state, "failed");
  mock.timers.tick(60_000);
  await flush();
  assert.equal(fake.sockets.length, 4);

  // connect() starts over.
  client.connect();
  await flush();
  assert.equal(fake.sockets.length, 5);
});

test("the attempt count starts over only after a stable connection", async () => {
  const { client, socket } = await connected({ minReconnectDelay: 100, stableAfter: 1000 });
  const delays = [];
  client.on("reconnecting", (e) => delays.push(e.delay));
  socket.drop();
  mock.timers.tick(50);
  await flush();
  fake.sockets[1].welcome();
  fake.sockets[1].drop(); // dropped again at once: attempt 2
  mock.timers.tick(100);
  await flush();
  fake.sockets[2].welcome();
  mock.timers.tick(1000); // stable
  fake.sockets[2].drop(); // attempt 1 again
  assert.deepEqual(delays, [50, 100, 50]);
});

test("close code 1000 from the server and close() do not reconnect", async () => {
  const { client, socket } = await connected();
  const closes = [];
  client.on("close", (e) => closes.push(e.code));
  socket.drop(1000, "disconnected by server");
  assert.equal(client.state, "closed");
  mock.timers.tick(60_000);
  await flush();
  assert.equal(fake.sockets.length, 1);

  client.connect();
  await flush();
  fake.sockets[1].welcome();
  client.close();
  assert.deepEqual(fake.sockets[1].closedWith, { code: 1000, reason: "" });
  assert.equal(client.state, "closed");
  assert.deepEqual(closes, [1000, 1000]);
  mock.timers.tick(60_000);
  await flush();
  assert.equal(fake.sockets.length, 2);
});

test("closes for the client's own input (1003, 1007, 1009) are final; 1011, 1013 and 1006 are not", async () => {
  for (const code of [1003, 1007, 1009]) {
    const { client, socket } = await connected();
    const published = client.publish("chat:lobby", { n: 1 }).catch((e) => e);
    socket.drop(code, "refused");
    assert.equal(client.state, "closed", `after ${code}`);
    mock.timers.tick(60_000);
    await flush();
    assert.equal(fake.sockets.length, 1, `no new socket after ${code}`);
    assert.equal((await published).code, "disconnected");
    fake.sockets.length = 0;
  }
  for (const code of [1001, 1006, 1008, 1011, 1013]) {
    const { client, socket } = await connected({ minReconnectDelay: 10, maxReconnectDelay: 10 });
    socket.drop(code, "");
    assert.equal(client.state, "reconnecting", `after ${code}`);
    mock.timers.tick(10);
    await flush();
    assert.equal(fake.sockets.length, 2, `a new socket after ${code}`);
    client.close();
    fake.sockets.length = 0;
  }
  assert.deepEqual(
    [1000, 1001, 1003, 1006, 1007, 1008, 1009, 1011, 1013, 4000].map(reconnectsAfter),
    [false, true, false, true, false, true, false, true, true, true],
  );
});

test("a subscribe with a timeout is rejected with timeout while offline, and the room is kept", async () => {
  const { client, socket } = await connected({ minReconnectDelay: 60_000, maxReconnectDelay: 60_000 });
  socket.drop(1006, "");
  assert.equal(client.state, "reconnecting");
  const seen = [];
  const waiting = client.subscribe("chat:lobby", (f) => seen.push(f), { timeout: 2000 }).catch((e) => e);
  const patient = client.subscribe("chat:lobby"); // no timeout: waits for the connection
  mock.timers.tick(1999);
  await flush();
  assert.equal(fake.sockets.length, 1);
  mock.timers.tick(1);
  const error = await waiting;
  assert.ok(error instanceof WshubError);
  assert.equal(error.code, "timeout");
  // The room is still wanted: the next connection subscribes to it.
  mock.timers.tick(60_000);
  await flush();
  const next = fake.sockets[1];
  next.welcome();
  await flush();
  const subscribe = next.last("subscribe");
  assert.equal(subscribe.room, "chat:lobby");
  next.reply(subscribe, { room: "chat:lobby", epoch: "e1", offset: 0 });
  await flush();
  assert.equal((await patient).epoch, "e1");
  client.close();
});

test("subscriptions resume with since after a reconnect, without duplicates", async () => {
  const { client, socket } = await connected();
  const got = [];
  const subscribedEvents = [];
  client.on("subscribed", (e) => subscribedEvents.push(e));
  const ready = client.subscribe("lobby", (frame) => got.push([frame.type, frame.offset ?? frame.client]));
  const subscribe = socket.last("subscribe");
  assert.deepEqual(subscribe, { type: "subscribe", room: "lobby", id: subscribe.id });
  socket.reply(subscribe, { room: "lobby", epoch: "e1", offset: 3 });
  assert.equal((await ready).offset, 3);

  const message = (offset, epoch = "e1") => ({ type: "message", room: "lobby", data: offset, from: null, offset, epoch });
  socket.receive(message(4));
  socket.receive({ type: "join", room: "lobby", client: "c2", user: null });
  socket.receive(message(5));
  socket.receive(message(5)); // duplicate
  socket.receive({ ...message(1), room: "elsewhere" }); // not subscribed
  assert.deepEqual(client.position("lobby"), { epoch: "e1", offset: 5 });

  socket.drop(1001);
  mock.timers.tick(1000);
  await flush();
  const second = fake.sockets[1];
  second.welcome("c1b");
  const resubscribe = second.last("subscribe");
  assert.deepEqual(resubscribe.since, { epoch: "e1", offset: 5 });
  second.reply(resubscribe, { room: "lobby", epoch: "e1", offset: 7, recovered: true });
  second.receive(message(6));
  second.receive(message(7));
  second.receive(message(7));
  await flush();
  assert.deepEqual(got, [
    ["message", 4],
    ["join", "c2"],
    ["message", 5],
    ["message", 6],
    ["message", 7],
  ]);
  assert.deepEqual(
    subscribedEvents.map((e) => [e.recovered, e.resubscribed]),
    [
      [undefined, false],
      [true, true],
    ],
  );
});

test("a lost history is reported and not reported again", async () => {
  const { client, socket } = await connected();
  const events = [];
  client.on("subscribed", (e) => events.push(e));
  const got = [];
  client.subscribe("lobby", (frame) => got.push(frame.offset), { since: { epoch: "old", offset: 40 } });
  const subscribe = socket.last("subscribe");
  assert.deepEqual(subscribe.since, { epoch: "old", offset: 40 });
  socket.reply(subscribe, { room: "lobby", epoch: "new", offset: 2, recovered: false });
  await flush();
  // The retained history of the new epoch is replayed from its start.
  const message = (offset) => ({ type: "message", room: "lobby", data: null, from: null, offset, epoch: "new" });
  socket.receive(message(1));
  socket.receive(message(2));
  socket.receive(message(3));
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(events[0].recovered, false);
  assert.deepEqual(client.position("lobby"), { epoch: "new", offset: 3 });

  // Same epoch, history trimmed past our offset and nothing left to replay: resume from
  // the server's offset next time, not from before the gap.
  client.subscribe("trimmed", () => {}, { since: { epoch: "e", offset: 10 } });
  socket.reply(socket.last("subscribe"), { room: "trimmed", epoch: "e", offset: 50, recovered: false });
  await flush();
  assert.deepEqual(client.position("trimmed"), { epoch: "e", offset: 50 });
});

test("a refused subscribe rejects and drops the room; several handlers share a room", async () => {
  const { client, socket } = await connected();
  const refused = client.subscribe("secret", () => {});
  socket.receive({ type: "error", id: socket.last("subscribe").id, code: "forbidden", message: "no" });
  await assert.rejects(refused, { code: "forbidden" });
  assert.equal(client.position("secret"), null);

  const a = [];
  const b = [];
  const handlerA = (f) => a.push(f.offset);
  client.subscribe("lobby", handlerA);
  const subscribe = socket.last("subscribe");
  socket.reply(subscribe, { room: "lobby", epoch: "e", offset: 0 });
  await flush();
  await client.subscribe("lobby", (f) => b.push(f.offset));
  assert.equal(socket.sent.filter((c) => c.type === "subscribe").length, 2); // one per room
  socket.receive({ type: "message", room: "lobby", data: 1, from: null, offset: 1, epoch: "e" });
  const left = client.unsubscribe("lobby", handlerA);
  await left; // another handler remains: no unsubscribe sent
  assert.equal(socket.last("unsubscribe"), undefined);
  socket.receive({ type: "message", room: "lobby", data: 2, from: null, offset: 2, epoch: "e" });
  assert.deepEqual(a, [1]);
  assert.deepEqual(b, [1, 2]);
  const gone = client.unsubscribe("lobby");
  socket.reply(socket.last("unsubscribe"), { room: "lobby" });
  await gone;
});

test("subscribing while disconnected waits for the connection", async () => {
  const client = newClient();
  const ready = client.subscribe("lobby", () => {});
  client.connect();
  await flush();
  const socket = fake.sockets[0];
  assert.equal(socket.sent.length, 0);
  socket.welcome();
  socket.reply(socket.last("subscribe"), { room: "lobby", epoch: "e", offset: 0 });
  assert.equal((await ready).epoch, "e");
});

/**
 * Follows `promise` from now on (so that its rejection is never unhandled): `outcome()`
 * is "pending" until it settles, then `{resolved}` or `{rejected}`.
 */
function watch(promise) {
  let outcome = "pending";
  promise.then(
    (value) => (outcome = { resolved: value }),
    (error) => (outcome = { rejected: error }),
  );
  return { promise, outcome: () => outcome };
}

/** The error a watched promise was rejected with; fails at once (no waiting) when it is still pending. */
async function rejection(watched) {
  await flush();
  const outcome = watched.outcome();
  assert.notEqual(outcome, "pending", "the promise has settled");
  assert.ok(outcome.rejected, "the promise was rejected");
  return outcome.rejected;
}

test("a subscribe made while reconnecting is rejected when the client gives up; the room stays", async () => {
  const { client } = await subscribedThenDropped({ maxReconnectAttempts: 1 });
  const pending = watch(client.subscribe("later", () => {}));
  await flush();
  assert.equal(pending.outcome(), "pending");
  // Also one written on the next socket, which then drops before its ok.
  const socket = await reconnect();
  socket.welcome("c1b");
  assert.deepEqual(socket.sent.map((c) => c.room), ["lobby", "later"]);
  const inFlight = watch(client.subscribe("later", () => {}));
  // Dropped before the stable period: the attempt count was not reset, the one allowed
  // attempt is used up.
  socket.drop(1006);
  assert.equal(client.state, "failed");
  for (const promise of [pending, inFlight]) {
    const error = await rejection(promise);
    assert.ok(error instanceof WshubError);
    assert.equal(error.code, "disconnected");
    assert.match(error.message, /later.*gave up reconnecting after 1 attempts/);
  }
  // The room is kept: connect() joins it again, and a new subscribe waits for that.
  const again = watch(client.subscribe("later", () => {}));
  client.connect();
  await flush();
  const back = fake.sockets.at(-1);
  back.welcome("c1c");
  const resubscribe = back.sent.find((c) => c.room === "later");
  back.reply(resubscribe, { room: "later", epoch: "e2", offset: 0 });
  await flush();
  assert.equal(again.outcome().resolved?.epoch, "e2");
});

test("a subscribe made while reconnecting is rejected by a final close, and by close()", async () => {
  // The first connection dropped; the server closes the next one for good (1000) before
  // its welcome: the subscribe made in between has no connection to wait for.
  const { client } = await subscribedThenDropped();
  const pending = watch(client.subscribe("later", () => {}));
  const socket = await reconnect();
  socket.drop(1000, "disconnected by server");
  assert.equal(client.state, "closed");
  const error = await rejection(pending);
  assert.equal(error.code, "disconnected");
  assert.match(error.message, /not reopened/);

  // close() while reconnecting: `closed`, for every waiting subscribe of every room.
  fake = fakeWebSocket();
  const second = await subscribedThenDropped();
  const a = watch(second.client.subscribe("a", () => {}));
  const b = watch(second.client.subscribe("b", () => {}));
  const alsoA = watch(second.client.subscribe("a", () => {}));
  second.client.close();
  for (const promise of [a, b, alsoA]) {
    const error = await rejection(promise);
    assert.ok(error instanceof WshubError);
    assert.equal(error.code, "closed");
  }
  // A subscribe made after close() waits for the next connect(), as before the first one.
  const afterClose = watch(second.client.subscribe("c", () => {}));
  await flush();
  assert.equal(afterClose.outcome(), "pending");
  second.client.connect();
  await flush();
  const back = fake.sockets.at(-1);
  back.welcome("c2b");
  assert.deepEqual(back.sent.map((c) => c.room).sort(), ["a", "b", "c", "lobby"]);
  back.reply(back.sent.find((c) => c.room === "c"), { room: "c", epoch: "e", offset: 0 });
  await flush();
  assert.equal(afterClose.outcome().resolved?.epoch, "e");
});

test("a missing pong closes the connection and reconnects", async () => {
  const { client, socket } = await connected({ pingInterval: 1000, pongTimeout: 500 });
  mock.timers.tick(1000);
  const ping = socket.last("ping");
  assert.ok(ping, "a ping was sent");
  socket.reply(ping);
  await flush();
  mock.timers.tick(1000);
  assert.equal(socket.sent.filter((c) => c.type === "ping").length, 2);
  mock.timers.tick(500); // no pong
  await flush();
  assert.equal(socket.closedWith.code, 4000);
  assert.equal(client.state, "reconnecting");
  mock.timers.tick(1000);
  await flush();
  assert.equal(fake.sockets.length, 2);
});

test("no welcome in time counts as a failed attempt", async () => {
  const client = newClient({ requestTimeout: 300 });
  client.connect();
  await flush();
  mock.timers.tick(300);
  await flush();
  assert.equal(fake.sockets[0].closedWith.code, 4000);
  assert.equal(client.state, "reconnecting");
});

test("direct and broadcast frames are events; a listener can be removed", async () => {
  const { client, socket } = await connected();
  const seen = [];
  const off = client.on("direct", (f) => seen.push(f.data));
  client.on("broadcast", (f) => seen.push(f.data));
  socket.receive({ type: "direct", from: "c9", data: "to you" });
  off();
  socket.receive({ type: "direct", from: "c9", data: "unheard" });
  socket.receive({ type: "broadcast", from: null, data: "to all" });
  assert.deepEqual(seen, ["to you", "to all"]);
});

test("close() then connect() while the token is fetched opens one socket", async () => {
  let release;
  const client = newClient({ token: () => new Promise((resolve) => { release = resolve; }) });
  client.connect();
  const first = release;
  client.close();
  client.connect();
  first("t1");
  release("t2");
  await flush();
  assert.equal(fake.sockets.length, 1);
  assert.equal(new URL(fake.sockets[0].url).searchParams.get("token"), "t2");
  fake.sockets[0].welcome();
  assert.equal(client.state, "connected");
});

test("frames of other types are emitted by their type; client event names are not", async () => {
  const { client, socket } = await connected();
  const seen = [];
  client.on("custom", (f) => seen.push(["custom", f.x]));
  client.on("state", (e) => seen.push(["state", e.state]));
  socket.receive({ type: "custom", x: 1 });
  socket.receive({ type: "state", state: "bogus" });
  assert.deepEqual(seen, [["custom", 1]]);
  assert.equal(client.state, "connected");
});

test("a per-call timeout wins over requestTimeout", async () => {
  const { client } = await connected({ requestTimeout: 10_000 });
  const published = client.publish("lobby", 1, { timeout: 100 });
  mock.timers.tick(100);
  await assert.rejects(published, { code: "timeout" });
  const history = client.history("lobby", { limit: 1, timeout: 50 });
  mock.timers.tick(50);
  await assert.rejects(history, { code: "timeout" });
});

// ---- the offline publish queue ----

/** A client connected and subscribed to `lobby` (epoch e1, offset 3), then dropped. */
async function subscribedThenDropped(options) {
  const { client, socket } = await connected({ minReconnectDelay: 1000, ...options });
  const got = [];
  const ready = client.subscribe("lobby", (frame) => got.push(frame.data));
  socket.reply(socket.last("subscribe"), { room: "lobby", epoch: "e1", offset: 3 });
  await ready;
  socket.drop(1006);
  assert.equal(client.state, "reconnecting");
  return { client, socket, got };
}

/**
 * Opens the next socket once the reconnect delay is over: `ms` more of it (500 ms for the
 * first attempt with minReconnectDelay 1000 and random 0.5, 1000 ms for the second).
 */
async function reconnect(ms = 500) {
  const before = fake.sockets.length;
  mock.timers.tick(ms);
  await flush();
  assert.equal(fake.sockets.length, before + 1, "a new socket");
  return fake.sockets.at(-1);
}

test("offline queue: publishes made while away are sent after the resubscribe, in call order", async () => {
  const { client, got } = await subscribedThenDropped({ offlineQueueCapacity: 3 });
  const queued = [1, 2, 3].map((n) => client.publish("lobby", { n }));
  // The fourth does not fit: rejected at once, without waiting for any timer.
  await assert.rejects(client.publish("lobby", { n: 4 }), (error) => {
    assert.ok(error instanceof WshubError);
    assert.equal(error.code, "offline_queue_full");
    assert.match(error.message, /full \(3 messages\)/);
    return true;
  });
  // Other commands do not wait for a connection.
  await assert.rejects(client.send("c2", 1), { code: "disconnected" });

  const second = await reconnect();
  assert.deepEqual(second.sent, [], "nothing is written before the welcome");
  const order = [];
  const off = client.on("reconnected", () => {
    off();
    // Written after the queue: the queue keeps call order with later publishes.
    client.publish("lobby", { n: 5 });
    order.push("reconnected");
  });
  second.welcome("c1b");
  assert.deepEqual(
    second.sent.map((c) => [c.type, c.data?.n ?? c.since]),
    [
      ["subscribe", { epoch: "e1", offset: 3 }],
      ["publish", 1],
      ["publish", 2],
      ["publish", 3],
      ["publish", 5],
    ],
  );
  assert.deepEqual(order, ["reconnected"]);
  const publishes = second.sent.filter((c) => c.type === "publish");
  assert.equal(new Set(second.sent.map((c) => c.id)).size, 5, "fresh ids");
  second.reply(second.last("subscribe"), { room: "lobby", epoch: "e1", offset: 3, recovered: true });
  for (const [i, command] of publishes.entries()) {
    second.receive({ type: "message", room: "lobby", data: command.data, from: "c1b", offset: 4 + i, epoch: "e1" });
    second.reply(command, { room: "lobby", offset: 4 + i });
  }
  assert.deepEqual((await Promise.all(queued)).map((ok) => ok.offset), [4, 5, 6]);
  assert.deepEqual(got, [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 5 }]);

  // The queue is empty again: the next drop does not send anything twice.
  second.drop(1006);
  const third = await reconnect(1000); // attempt 2: the connection was not up for stableAfter
  third.welcome("c1c");
  assert.deepEqual(third.sent.map((c) => c.type), ["subscribe"]);
});

test("offline queue: a publish made while connecting for the first time waits for the welcome", async () => {
  const client = newClient();
  client.connect();
  const published = client.publish("lobby", "early");
  await flush();
  const socket = fake.sockets[0];
  assert.equal(client.state, "connecting");
  assert.deepEqual(socket.sent, []);
  socket.welcome();
  const command = socket.last("publish");
  assert.equal(command.data, "early");
  socket.reply(command, { room: "lobby", offset: 1 });
  assert.equal((await published).offset, 1);
});

test("offline queue: the timeout counts from the call; a publish that timed out is never sent", async () => {
  const { client } = await subscribedThenDropped({ requestTimeout: 10_000 });
  const stale = client.publish("lobby", "stale", { timeout: 300 });
  const late = client.publish("lobby", "late", { timeout: 800 });
  mock.timers.tick(300);
  await assert.rejects(stale, (error) => error.code === "timeout" && /not sent/.test(error.message));

  const second = await reconnect(200); // 500 ms after the calls
  second.welcome("c1b");
  assert.deepEqual(second.sent.filter((c) => c.type === "publish").map((c) => c.data), ["late"]);
  let settled = false;
  late.catch(() => {}).finally(() => (settled = true));
  mock.timers.tick(299);
  await flush();
  assert.equal(settled, false);
  mock.timers.tick(1); // 800 ms after the call, 300 ms after it was written
  await assert.rejects(late, (error) => error.code === "timeout" && /no reply/.test(error.message));
});

test("offline queue: a publish in flight when the connection drops is rejected, not sent again", async () => {
  const { client, socket } = await connected({ minReconnectDelay: 1000 });
  const inFlight = client.publish("lobby", "maybe delivered");
  assert.equal(socket.last("publish").data, "maybe delivered");
  socket.drop(1006);
  await assert.rejects(inFlight, { code: "disconnected" });
  const second = await reconnect();
  second.welcome("c1b");
  assert.equal(second.last("publish"), undefined);
});

test("offline queue: capacity 0 turns it off; not connecting means not queueing", async () => {
  const { client } = await subscribedThenDropped({ offlineQueueCapacity: 0 });
  await assert.rejects(client.publish("lobby", 1), { code: "disconnected" });
  const second = await reconnect();
  second.welcome("c1b");
  assert.equal(second.last("publish"), undefined);

  // Never connected (idle): rejected as before, not kept for a connect() that may not come.
  const idle = newClient();
  await assert.rejects(idle.publish("lobby", 1), { code: "disconnected" });
});

test("offline queue: close() rejects what is queued with closed; nothing is sent later", async () => {
  const { client } = await subscribedThenDropped();
  const queued = client.publish("lobby", "never");
  client.close();
  await assert.rejects(queued, { code: "closed" });
  client.connect();
  await flush();
  const socket = fake.sockets.at(-1);
  socket.welcome("c1b");
  assert.deepEqual(socket.sent.map((c) => c.type), ["subscribe"]);
});

test("offline queue: giving up, or a final close by the server, rejects what is queued", async () => {
  const { client } = await subscribedThenDropped({ maxReconnectAttempts: 1 });
  const queued = client.publish("lobby", "never");
  const socket = await reconnect();
  socket.drop(1006); // the one attempt failed
  assert.equal(client.state, "failed");
  await assert.rejects(queued, (error) => error.code === "disconnected" && /gave up/.test(error.message));
  await assert.rejects(client.publish("lobby", 1), { code: "disconnected" });

  // Closed with 1000 from a socket that is still closing when the publish is made.
  fake = fakeWebSocket();
  const second = await connected();
  second.socket.readyState = 2; // CLOSING: the close is not reported yet
  const closing = second.client.publish("lobby", "closing");
  assert.deepEqual(second.socket.sent, []);
  second.socket.drop(1000, "disconnected by server");
  assert.equal(second.client.state, "closed");
  await assert.rejects(closing, (error) => error.code === "disconnected" && /not reopened/.test(error.message));
});

// ---- reconnecting at once when the browser says it may work ----

/** A stand-in for `window` or `document`: dispatches events, counts its listeners. */
class FakeEventTarget {
  constructor(fields = {}) {
    Object.assign(this, fields);
    this.listeners = new Map();
  }
  addEventListener(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(listener);
  }
  removeEventListener(type, listener) {
    this.listeners.get(type)?.delete(listener);
  }
  dispatch(type) {
    for (const listener of [...(this.listeners.get(type) ?? [])]) listener({ type });
  }
  count(type) {
    return this.listeners.get(type)?.size ?? 0;
  }
}

/** Runs `body` with fake `window` and `document` globals, removed afterwards. */
async function inBrowser(body) {
  assert.equal(globalThis.window, undefined, "Node has no window");
  assert.equal(globalThis.document, undefined, "Node has no document");
  const win = new FakeEventTarget();
  const doc = new FakeEventTarget({ visibilityState: "hidden" });
  globalThis.window = win;
  globalThis.document = doc;
  try {
    await body(win, doc);
  } finally {
    delete globalThis.window;
    delete globalThis.document;
  }
}

test("network: online and a visible page skip the backoff wait; close() removes the listeners", async () => {
  await inBrowser(async (win, doc) => {
    // Delays of 5 s and more: any reconnect sooner was woken up.
    const { client, socket } = await connected({ minReconnectDelay: 10_000, maxReconnectDelay: 60_000 });
    assert.equal(win.count("online"), 1);
    assert.equal(doc.count("visibilitychange"), 1);

    // Connected: nothing to wake.
    win.dispatch("online");
    await flush();
    assert.equal(fake.sockets.length, 1);

    socket.drop(1006);
    assert.equal(client.state, "reconnecting");
    mock.timers.tick(1000);
    await flush();
    assert.equal(fake.sockets.length, 1, "still waiting out the backoff");
    win.dispatch("online");
    win.dispatch("online"); // twice: still one attempt
    await flush();
    assert.equal(fake.sockets.length, 2, "reconnected at once on online");
    // The skipped timer does not open another socket later.
    mock.timers.tick(60_000);
    await flush();
    assert.equal(fake.sockets.length, 2);

    // The attempt fails; a hidden page does not wake it, a visible one does.
    fake.sockets[1].drop(1006);
    assert.equal(client.attempt, 2, "the woken attempt counted");
    doc.dispatch("visibilitychange");
    await flush();
    assert.equal(fake.sockets.length, 2, "hidden: keeps waiting");
    doc.visibilityState = "visible";
    doc.dispatch("visibilitychange");
    await flush();
    assert.equal(fake.sockets.length, 3, "visible: reconnected at once");
    fake.sockets[2].welcome("c1b");
    assert.equal(client.state, "connected");

    client.close();
    assert.equal(win.count("online"), 0);
    assert.equal(doc.count("visibilitychange"), 0);
    win.dispatch("online");
    await flush();
    assert.equal(fake.sockets.length, 3);

    // connect() listens again, once.
    client.connect();
    client.connect();
    assert.equal(win.count("online"), 1);
    assert.equal(doc.count("visibilitychange"), 1);
    client.close();
  });
});

test("network: a client that gave up stops listening", async () => {
  await inBrowser(async (win, doc) => {
    const { client, socket } = await connected({ maxReconnectAttempts: 1, minReconnectDelay: 1000 });
    socket.drop(1006);
    win.dispatch("online");
    await flush();
    fake.sockets[1].drop(1006);
    assert.equal(client.state, "failed");
    assert.equal(win.count("online"), 0);
    assert.equal(doc.count("visibilitychange"), 0);
  });
});

test("network: without window and document (Node), nothing is listened to", async () => {
  const { client, socket } = await connected({ minReconnectDelay: 1000 });
  socket.drop(1006);
  assert.deepEqual(client._network, []);
  mock.timers.tick(500);
  await flush();
  assert.equal(fake.sockets.length, 2);
});

// ---- extensions ----

test("extensions: the socket's, once open; empty before and after", async () => {
  const client = newClient({ minReconnectDelay: 1000 });
  assert.equal(client.extensions, "");
  client.connect();
  await flush();
  const socket = fake.sockets[0];
  socket.extensions = "permessage-deflate; client_max_window_bits=15";
  assert.equal(client.extensions, "", "not open yet");
  socket.welcome();
  assert.equal(client.extensions, "permessage-deflate; client_max_window_bits=15");
  socket.drop(1006);
  assert.equal(client.extensions, "");
  const second = await reconnect();
  second.welcome("c1b"); // negotiated nothing this time
  assert.equal(client.extensions, "");
  second.extensions = undefined; // an implementation without the property
  assert.equal(client.extensions, "");
  client.close();
  assert.equal(client.extensions, "");
});

// ---- routing by a field of a frame's data ----

test("route: message, direct and broadcast frames by their data's type, each message once", async () => {
  const { client, socket } = await connected();
  const seen = [];
  const off = client.route("notification", (data, frame) => seen.push([frame.type, data.text]));
  client.route("move", (data, frame) => seen.push([frame.type, data.x, frame.offset]));
  client.subscribe("game", () => {});
  socket.reply(socket.last("subscribe"), { room: "game", epoch: "e", offset: 0 });
  await flush();
  const move = { type: "message", room: "game", data: { type: "move", x: 3 }, from: "c2", offset: 1, epoch: "e" };
  socket.receive(move);
  socket.receive(move); // a duplicate: not routed again
  socket.receive({ type: "message", room: "elsewhere", data: { type: "move", x: 9 }, from: "c2", offset: 1, epoch: "e" });
  socket.receive({ type: "direct", from: null, data: { type: "notification", text: "to you" } });
  socket.receive({ type: "broadcast", from: "c3", data: { type: "notification", text: "to all" } });
  socket.receive({ type: "direct", from: null, data: "a string" });
  socket.receive({ type: "direct", from: null, data: [{ type: "notification" }] });
  socket.receive({ type: "custom", data: { type: "notification", text: "not a routed frame type" } });
  off();
  socket.receive({ type: "direct", from: null, data: { type: "notification", text: "unheard" } });
  assert.deepEqual(seen, [
    ["message", 3, 1],
    ["direct", "to you"],
    ["broadcast", "to all"],
  ]);
});

test("route: the field is routeField", async () => {
  const { client, socket } = await connected({ routeField: "kind" });
  const seen = [];
  client.route("alert", (data) => seen.push(data.level));
  socket.receive({ type: "direct", from: null, data: { kind: "alert", type: "other", level: 2 } });
  socket.receive({ type: "direct", from: null, data: { type: "alert", level: 3 } });
  assert.deepEqual(seen, [2]);
});
