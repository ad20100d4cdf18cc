// The browser client against the real `wshub` binary on a Redis backplane (a redis-server
// this file starts on a free loopback port, nothing kept on disk), when that backplane is
// disturbed: a subscribe answered `unavailable` while Redis is down is tried again until
// it works, and an `unrecoverable` frame moves the room's position forward.
// Run with: node --test clients/js/test/backplane.test.mjs (test.sh builds the binary).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import WebSocket from "ws";

import { WshubClient } from "../src/wshub.js";
import { startServer, stopAll, waitFor, nextEvent, sleep } from "./support/server.mjs";

let redis;
let server;
const clients = [];

/** A free loopback port. */
async function freePort() {
  const probe = net.createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** One Redis command on a connection of its own; the raw reply. */
function redisCommand(port, args) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let reply = "";
    const timer = setTimeout(() => socket.destroy(new Error(`redis ${args}: no reply`)), 5000);
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on("data", (chunk) => {
      reply += chunk;
      if (reply.endsWith("\r\n")) {
        clearTimeout(timer);
        socket.end();
        resolve(reply.trim());
      }
    });
    socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`);
  });
}

/** redis-server on `port`, answering PING. */
async function startRedis(port) {
  const child = spawn("redis-server", ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.on("error", () => {});
  await waitFor("redis-server", () => redisCommand(port, ["PING"]).then((r) => r === "+PONG", () => false), {
    timeout: 10_000,
  });
  return {
    port,
    kill: async () => {
      child.kill("SIGKILL");
      await exited;
    },
  };
}

before(async () => {
  redis = await startRedis(await freePort());
  server = await startServer({ args: ["--redis", `redis://127.0.0.1:${redis.port}`] });
});

after(async () => {
  for (const client of clients) client.close();
  await redis?.kill();
  await stopAll();
});

async function connect() {
  const client = new WshubClient({
    url: server.ws,
    WebSocket,
    minReconnectDelay: 50,
    maxReconnectDelay: 500,
    requestTimeout: 3000,
  });
  clients.push(client);
  const opened = nextEvent(client, "open");
  client.connect();
  await opened;
  return client;
}

async function health() {
  const response = await fetch(`${server.http}/healthz`, { signal: AbortSignal.timeout(5000) });
  return response.text();
}

test("a subscribe while the backplane is down is tried again until it works", { timeout: 30_000 }, async () => {
  const client = await connect();
  await redis.kill();
  await waitFor("a degraded backplane", async () => (await health()).startsWith("degraded"), { timeout: 10_000 });
  const seen = [];
  const subscribed = client.subscribe("outage", (frame) => seen.push(frame.data));
  await sleep(700);
  redis = await startRedis(redis.port);
  const ok = await subscribed;
  assert.equal(ok.room, "outage");
  const published = await server.api("POST", "/api/publish", { room: "outage", data: "after" });
  assert.equal(published.status, 200, JSON.stringify(published.body));
  await waitFor("the message", () => seen.includes("after"));
});

test("an unrecoverable frame moves the room's position forward", { timeout: 30_000 }, async () => {
  await waitFor("a connected backplane", async () => (await health()).startsWith("ok"), { timeout: 10_000 });
  const client = await connect();
  await client.subscribe("lost", () => {});
  for (let i = 0; i < 3; i++) await server.api("POST", "/api/publish", { room: "lost", data: i });
  await waitFor("offset 3", () => client.position("lost")?.offset === 3);
  const before = client.position("lost");

  // The room's history is lost; another client's subscribe is the first to read it again.
  assert.equal(await redisCommand(redis.port, ["DEL", "wshub:meta:lost", "wshub:stream:lost"]), ":2");
  const told = nextEvent(client, "unrecoverable", { timeout: 10_000 });
  const other = await connect();
  const ok = await other.subscribe("lost", () => {});
  const frame = await told;
  assert.equal(frame.epoch, ok.epoch);
  assert.notEqual(frame.epoch, before.epoch);
  assert.deepEqual(client.position("lost"), { epoch: frame.epoch, offset: frame.offset });
});

test("a drained node closes with 1012: the client comes back promptly and resumes on the next node", { timeout: 30_000 }, async () => {
  await waitFor("a connected backplane", async () => (await health()).startsWith("ok"), { timeout: 10_000 });
  const args = ["--redis", `redis://127.0.0.1:${redis.port}`, "--drain-window", "300ms"];
  // The client starts before the node: its first attempts fail, and with a connection
  // never "stable" they would go on counting; only the 1012 rule starts them over.
  const port = await freePort();
  const client = new WshubClient({
    url: `ws://127.0.0.1:${port}/ws`,
    WebSocket,
    minReconnectDelay: 100,
    maxReconnectDelay: 400,
    stableAfter: 3_600_000,
    requestTimeout: 3000,
  });
  clients.push(client);
  const failing = nextEvent(client, "reconnecting", { filter: (e) => e.attempt >= 2 });
  client.connect();
  await failing;
  const opened = nextEvent(client, "open");
  let node = await startServer({ port, args });
  try {
    await opened;
    const got = [];
    await client.subscribe("drained", (frame) => {
      if (frame.type === "message") got.push([frame.data, frame.offset]);
    });
    for (let n = 0; n < 3; n++) await node.api("POST", "/api/publish", { room: "drained", data: n });
    await waitFor("three messages", () => got.length === 3);

    const closed = nextEvent(client, "close");
    const reconnecting = nextEvent(client, "reconnecting");
    const drain = await node.api("POST", "/api/drain", {});
    assert.deepEqual(drain, { status: 202, body: { draining: true, window_ms: 300 } });
    assert.deepEqual(await closed, { code: 1012, reason: "service restart" });
    const next = await reconnecting;
    assert.equal(next.attempt, 1, "not counted as a failure");
    assert.ok(next.delay <= 100, `a prompt reconnect, not ${next.delay} ms`);
    // Its last client gone, the drained node exits by itself, with status 0.
    assert.deepEqual(await node.process.exited, { code: 0, signal: null });

    const resubscribed = nextEvent(client, "subscribed", { timeout: 15_000, filter: (e) => e.resubscribed });
    node = await startServer({ port, args });
    for (let n = 3; n < 5; n++) await node.api("POST", "/api/publish", { room: "drained", data: n });
    const event = await resubscribed;
    assert.equal(event.recovered, true);
    assert.equal(event.lost, undefined);
    await waitFor("five messages", () => got.length >= 5);
    await sleep(100); // room for a duplicate to show up
    assert.deepEqual(got, [0, 1, 2, 3, 4].map((n) => [n, n + 1]));
  } finally {
    await node.kill();
  }
});
