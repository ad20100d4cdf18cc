// The browser client against the real `wshub` binary, over real sockets, in Node with the
// `ws` package as its WebSocket (Node 20 has no global one).
// Run with: node --test clients/js/test/server.test.mjs (test.sh builds the binary first).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";

import { WshubClient, WshubError } from "../src/wshub.js";
import { startServer, stopAll, waitFor, nextEvent, sleep } from "./support/server.mjs";

let server;
const clients = [];

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const client of clients) client.close();
  await stopAll();
});

/** A client of `server` (or of `url`), connected; closed by the `after` hook. */
async function connect(options = {}) {
  const client = new WshubClient({
    url: server.ws,
    WebSocket,
    minReconnectDelay: 50,
    maxReconnectDelay: 500,
    requestTimeout: 3000,
    ...options,
  });
  clients.push(client);
  const opened = nextEvent(client, "open");
  client.connect();
  await opened;
  return client;
}

let roomCount = 0;
const freshRoom = (prefix = "room") => `${prefix}-${process.pid}-${++roomCount}`;

test("welcome, subscribe and publish between two clients", { timeout: 15_000 }, async () => {
  const alice = await connect();
  const bob = await connect();
  assert.equal(alice.state, "connected");
  assert.match(alice.clientId, /\S/);
  assert.notEqual(alice.clientId, bob.clientId);

  const room = freshRoom("chat");
  const seenByAlice = [];
  const seenByBob = [];
  const okAlice = await alice.subscribe(room, (frame) => seenByAlice.push(frame));
  await bob.subscribe(room, (frame) => seenByBob.push(frame));
  assert.equal(okAlice.room, room);
  assert.equal(typeof okAlice.epoch, "string");
  assert.equal(okAlice.offset, 0);

  const published = await alice.publish(room, { text: "hello" });
  assert.equal(published.offset, 1);
  await bob.publish(room, { text: "hi alice" });
  const messages = (list) => list.filter((f) => f.type === "message").map((f) => [f.from, f.data.text, f.offset]);
  const expected = [
    [alice.clientId, "hello", 1],
    [bob.clientId, "hi alice", 2],
  ];
  await waitFor("both messages at both clients", () => messages(seenByAlice).length === 2 && messages(seenByBob).length === 2);
  assert.deepEqual(messages(seenByAlice), expected);
  assert.deepEqual(messages(seenByBob), expected);
  // Alice saw Bob join (never herself).
  assert.deepEqual(
    seenByAlice.filter((f) => f.type === "join").map((f) => f.client),
    [bob.clientId],
  );
  assert.deepEqual(alice.position(room), { epoch: okAlice.epoch, offset: 2 });
});

test("presence, history, send and errors as promises", { timeout: 15_000 }, async () => {
  const alice = await connect();
  const bob = await connect();
  const room = freshRoom("presence");
  await alice.subscribe(room, () => {});
  await bob.subscribe(room, () => {});

  const presence = await alice.presence(room);
  assert.deepEqual(presence.clients.map((c) => c.client).sort(), [alice.clientId, bob.clientId].sort());
  assert.ok(presence.clients.every((c) => c.user === null));

  for (let n = 1; n <= 5; n++) await alice.publish(room, { n });
  const newest = await bob.history(room, { limit: 2 });
  assert.deepEqual(newest.messages.map((m) => m.data.n), [4, 5]);
  const after2 = await bob.history(room, { since: { epoch: newest.epoch, offset: 2 }, limit: 2 });
  assert.deepEqual(after2.messages.map((m) => m.offset), [3, 4]);

  const direct = nextEvent(bob, "direct");
  await alice.send(bob.clientId, { secret: 42 });
  const frame = await direct;
  assert.deepEqual([frame.from, frame.data], [alice.clientId, { secret: 42 }]);

  await assert.rejects(alice.send("no-such-client", 1), (error) => error instanceof WshubError && error.code === "not_found");
  await assert.rejects(alice.publish("has space", 1), { code: "bad_request" });
  await assert.rejects(alice.subscribe("bad room", () => {}), { code: "bad_request" });
  assert.equal(alice.position("bad room"), null);
  assert.ok((await alice.ping()) >= 0);

  // The HTTP API reaches the client too.
  const broadcast = nextEvent(alice, "broadcast");
  const answer = await server.api("POST", "/api/broadcast", { data: "to everyone" });
  assert.equal(answer.status, 200);
  assert.deepEqual([(await broadcast).from, (await broadcast).data], [null, "to everyone"]);
});

test("recovery after the server drops the connection: every missed message once, in order", { timeout: 20_000 }, async () => {
  // The reconnect waits for the gate, so the messages are surely published while away.
  let openGate;
  let gate = Promise.resolve();
  const alice = await connect({
    token: async () => {
      await gate;
      return null;
    },
    // /api/disconnect closes with 1000, which by default means "do not come back".
    shouldReconnect: () => true,
  });
  const room = freshRoom("recovery");
  const got = [];
  await alice.subscribe(room, (frame) => {
    if (frame.type === "message") got.push(frame.data);
  });
  await alice.publish(room, 0);
  await waitFor("the first message", () => got.length === 1);

  gate = new Promise((resolve) => {
    openGate = resolve;
  });
  const firstId = alice.clientId;
  const closed = nextEvent(alice, "close");
  const dropped = await server.api("POST", "/api/disconnect", { client: firstId });
  assert.deepEqual(dropped, { status: 200, body: {} });
  assert.deepEqual(await closed, { code: 1000, reason: "disconnected by server" });
  assert.equal(alice.state, "reconnecting");
  // Kept in the offline queue, sent once the room is subscribed again: after the replay.
  const whileAway = alice.publish(room, "while away");
  whileAway.catch(() => {}); // awaited below; not an unhandled rejection meanwhile
  await assert.rejects(alice.presence(room), { code: "disconnected" });

  for (let n = 1; n <= 20; n++) {
    const answer = await server.api("POST", "/api/publish", { room, data: n });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.offset, n + 1);
  }
  const resubscribed = nextEvent(alice, "subscribed", { filter: (e) => e.room === room });
  const reconnected = nextEvent(alice, "reconnected");
  openGate();
  const welcome = await reconnected;
  assert.notEqual(welcome.client, firstId, "a new connection");
  const event = await resubscribed;
  assert.equal(event.recovered, true);
  assert.equal(event.lost, undefined, "nothing lost");
  assert.equal(event.resubscribed, true);
  assert.equal((await whileAway).offset, 22);
  await waitFor("the 20 missed messages and the queued one", () => got.length >= 22);
  await alice.publish(room, "live");
  await waitFor("the live message", () => got.length >= 23);
  await sleep(100); // room for a duplicate to show up
  assert.deepEqual(got, [0, ...Array.from({ length: 20 }, (_, i) => i + 1), "while away", "live"]);
  assert.deepEqual(alice.position(room).offset, 23);
});

test("a resume past the trimmed history: `lost` on `subscribed` names exactly the trimmed offsets", { timeout: 20_000 }, async () => {
  // A server of its own that keeps 5 messages per room.
  const small = await startServer({ args: ["--history-size", "5"] });
  try {
    let openGate;
    let gate = Promise.resolve();
    const alice = await connect({
      url: small.ws,
      token: async () => {
        await gate;
        return null;
      },
      shouldReconnect: () => true,
    });
    const room = freshRoom("trimmed");
    const got = [];
    await alice.subscribe(room, (frame) => {
      if (frame.type === "message") got.push(frame.offset);
    });
    for (let n = 1; n <= 3; n++) await alice.publish(room, n);
    await waitFor("the first three", () => got.length === 3);
    const epoch = alice.position(room).epoch;

    gate = new Promise((resolve) => {
      openGate = resolve;
    });
    const closed = nextEvent(alice, "close");
    await small.api("POST", "/api/disconnect", { client: alice.clientId });
    await closed;
    // 20 while away: offsets 4 to 23, of which the history keeps 19 to 23.
    for (let n = 4; n <= 23; n++) {
      const answer = await small.api("POST", "/api/publish", { room, data: n });
      assert.equal(answer.body.offset, n);
    }
    const resubscribed = nextEvent(alice, "subscribed", { filter: (e) => e.room === room });
    openGate();
    const event = await resubscribed;
    assert.equal(event.recovered, false);
    assert.equal(event.offset, 23);
    assert.deepEqual(event.lost, [{ epoch, from: 4, to: 18 }]);
    await waitFor("the retained five", () => got.length === 8);
    await sleep(100); // room for a duplicate to show up
    // Every offset after 3 exactly once: delivered, or named lost.
    const lost = [];
    for (const range of event.lost) for (let o = range.from; o <= range.to; o++) lost.push(o);
    assert.deepEqual(got, [1, 2, 3, 19, 20, 21, 22, 23]);
    assert.deepEqual([...lost, ...got.slice(3)], Array.from({ length: 20 }, (_, i) => i + 4));
    assert.deepEqual(alice.position(room), { epoch, offset: 23 });
  } finally {
    await small.kill();
  }
});

test("by default, a disconnect by the server (1000) is final", { timeout: 10_000 }, async () => {
  const alice = await connect();
  const closed = nextEvent(alice, "state", { filter: (e) => e.state === "closed" });
  await server.api("POST", "/api/disconnect", { client: alice.clientId });
  await closed;
  await sleep(200);
  assert.equal(alice.state, "closed");
});

test("the application ping notices a server that stopped answering", { timeout: 20_000 }, async () => {
  // A server of its own: this one is frozen (SIGSTOP), which would stall the other tests.
  const frozen = await startServer();
  try {
    const client = await connect({ url: frozen.ws, pingInterval: 200, pongTimeout: 300, requestTimeout: 1000 });
    const room = freshRoom("ping");
    await client.subscribe(room, () => {});
    const closed = nextEvent(client, "close", { timeout: 3000 });
    frozen.freeze();
    // The socket stays open (the kernel keeps it), only the missing pong tells.
    assert.deepEqual(await closed, { code: 4000, reason: "no pong in time" });
    assert.equal(client.state, "reconnecting");
    const back = nextEvent(client, "subscribed", { timeout: 10_000, filter: (e) => e.resubscribed });
    frozen.thaw();
    const event = await back;
    assert.equal(event.room, room);
    assert.equal(client.state, "connected");
  } finally {
    await frozen.kill();
  }
});

test("a restart on the same port: reconnects, resubscribes, replays the new epoch", { timeout: 30_000 }, async () => {
  let current = await startServer();
  const port = current.port;
  try {
    const client = await connect({ url: current.ws, maxReconnectDelay: 200 });
    const room = freshRoom("restart");
    const got = [];
    await client.subscribe(room, (frame) => {
      if (frame.type === "message") got.push([frame.data, frame.offset]);
    });
    await client.publish(room, "before");
    await waitFor("the first message", () => got.length === 1);
    const oldEpoch = client.position(room).epoch;

    const reconnecting = nextEvent(client, "reconnecting");
    await current.kill();
    await reconnecting;
    current = await startServer({ port });
    assert.equal(current.port, port);
    // Published before the client is back: the new epoch's history replays it.
    await current.api("POST", "/api/publish", { room, data: "meanwhile" });
    const event = await nextEvent(client, "subscribed", { timeout: 15_000, filter: (e) => e.resubscribed });
    assert.equal(event.recovered, false, "the history was lost with the process");
    assert.notEqual(event.epoch, oldEpoch);
    // The rest of the old epoch, however long it was; the new one is replayed whole.
    assert.deepEqual(event.lost, [{ epoch: oldEpoch, from: 2 }]);
    await client.publish(room, "after");
    await waitFor("the replayed and the live message", () => got.length === 3);
    assert.deepEqual(got, [
      ["before", 1],
      ["meanwhile", 1],
      ["after", 2],
    ]);
    assert.deepEqual(client.position(room), { epoch: event.epoch, offset: 2 });
  } finally {
    await current.kill();
  }
});

test("publishes made while the server is down are delivered once it is back, exactly once", { timeout: 30_000 }, async () => {
  let current = await startServer();
  const port = current.port;
  try {
    const options = { url: current.ws, maxReconnectDelay: 200, offlineQueueCapacity: 3 };
    const alice = await connect(options);
    const bob = await connect(options);
    const room = freshRoom("offline");
    const seen = { alice: [], bob: [] };
    for (const [name, client] of [["alice", alice], ["bob", bob]]) {
      await client.subscribe(room, (frame) => {
        if (frame.type === "message") seen[name].push([frame.data, frame.offset, frame.from]);
      });
    }

    const down = Promise.all([alice, bob].map((client) => nextEvent(client, "reconnecting")));
    await current.kill();
    await down;
    const queued = ["one", "two", "three"].map((text) => alice.publish(room, { text }));
    for (const publish of queued) publish.catch(() => {}); // awaited below
    await assert.rejects(alice.publish(room, { text: "four" }), { code: "offline_queue_full" });
    await sleep(300); // reconnect attempts fail meanwhile: the queue waits through them
    assert.notEqual(alice.state, "connected");

    const back = nextEvent(alice, "reconnected", { timeout: 15_000 });
    current = await startServer({ port });
    const welcome = await back;
    const offsets = (await Promise.all(queued)).map((ok) => ok.offset);
    assert.deepEqual(offsets, [1, 2, 3], "the new process's room starts over");
    const expected = [
      [{ text: "one" }, 1, welcome.client],
      [{ text: "two" }, 2, welcome.client],
      [{ text: "three" }, 3, welcome.client],
    ];
    await waitFor("the three messages at both", () => seen.alice.length >= 3 && seen.bob.length >= 3, { timeout: 15_000 });
    // Bob came back before or after they were published: live or replayed, once each.
    await bob.publish(room, { text: "marker" });
    await waitFor("the marker at both", () => seen.alice.length >= 4 && seen.bob.length >= 4);
    await sleep(100); // room for a duplicate to show up
    for (const name of ["alice", "bob"]) {
      assert.deepEqual(seen[name].slice(0, 3), expected, name);
      assert.deepEqual(seen[name].slice(3).map(([data]) => data), [{ text: "marker" }], name);
    }
    const history = await bob.history(room);
    assert.deepEqual(history.messages.map((m) => m.data.text), ["one", "two", "three", "marker"]);
  } finally {
    await current.kill();
  }
});

test("extensions: what the socket negotiated; empty once closed", { timeout: 10_000 }, async () => {
  const alice = await connect();
  // A plain `ws` socket makes the same offer (permessage-deflate) to the same server.
  const raw = new WebSocket(server.ws);
  try {
    await new Promise((resolve, reject) => {
      raw.once("open", resolve);
      raw.once("error", reject);
    });
    assert.equal(typeof raw.extensions, "string");
    assert.equal(alice.extensions, raw.extensions);
  } finally {
    raw.terminate();
  }
  alice.close();
  assert.equal(alice.extensions, "");
});

test("permessage-deflate: negotiated with --compression; large messages arrive intact", { timeout: 15_000 }, async () => {
  const compressing = await startServer({ args: ["--compression"] });
  const alice = await connect({ url: compressing.ws });
  const bob = await connect({ url: compressing.ws });
  // `ws` offers permessage-deflate (and reports only the extension's name).
  assert.equal(alice.extensions, "permessage-deflate");
  const room = freshRoom("deflate");
  const seen = [];
  await bob.subscribe(room, (frame) => frame.type === "message" && seen.push(frame.data));
  await alice.subscribe(room, () => {});
  const big = { text: "all work and no play makes a dull hub ".repeat(800), n: 1 };
  const small = { text: "tiny", n: 2 };
  await alice.publish(room, big);
  await alice.publish(room, small);
  await waitFor("both messages", () => seen.length === 2);
  assert.deepEqual(seen, [big, small]);
  // The same server, without the offer: plain frames.
  const raw = new WebSocket(compressing.ws, { perMessageDeflate: false });
  try {
    await new Promise((resolve, reject) => {
      raw.once("open", resolve);
      raw.once("error", reject);
    });
    assert.equal(raw.extensions, "");
  } finally {
    raw.terminate();
  }
  await compressing.kill();
});

test("gives up after the maximum number of attempts", { timeout: 15_000 }, async () => {
  const doomed = await startServer();
  const client = await connect({ url: doomed.ws, maxReconnectAttempts: 3, minReconnectDelay: 20, maxReconnectDelay: 50 });
  const failed = nextEvent(client, "reconnect-failed", { timeout: 10_000 });
  const attempts = [];
  client.on("reconnecting", (e) => attempts.push(e.attempt));
  await doomed.kill();
  assert.deepEqual(await failed, { attempts: 3 });
  assert.deepEqual(attempts, [1, 2, 3]);
  assert.equal(client.state, "failed");
  await assert.rejects(client.publish("x", 1), { code: "disconnected" });
});

test("route: an application's notification inside data, from the HTTP API and from a peer", { timeout: 15_000 }, async () => {
  const alice = await connect();
  const bob = await connect();
  const seen = [];
  alice.route("notification", (data, frame) => seen.push([frame.type, frame.from, data.text]));
  await server.api("POST", "/api/send", { to: alice.clientId, data: { type: "notification", text: "from a backend" } });
  await bob.send(alice.clientId, { type: "notification", text: "from bob" });
  await bob.send(alice.clientId, { type: "other", text: "not routed" });
  const room = freshRoom("notify");
  await alice.subscribe(room, () => {});
  await bob.publish(room, { type: "notification", text: "in the room" });
  await waitFor("three notifications", () => seen.length === 3);
  assert.deepEqual(seen, [
    ["direct", null, "from a backend"],
    ["direct", bob.clientId, "from bob"],
    ["message", bob.clientId, "in the room"],
  ]);
});
