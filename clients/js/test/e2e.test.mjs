// End to end: the real `wshub` binary's demo page (/websocket, which loads /client.js) in
// headless Chromium, driven by playwright-core. Two people chat through it; then the server
// is killed and started again on the same port, and both pages must show reconnecting, then
// reconnected, and the messages sent meanwhile (one of them typed into a page while the
// server was down, shown as pending, then sent from the offline queue, once).
//
// Chromium: $CHROMIUM, or Debian's /usr/bin/chromium (test.sh installs it). Screenshots
// of every page are written to clients/js/test-results/ when a test fails.
//
// The plain WebSocket client (/websocket.js, which /client.js imports) is driven in the
// page too, against the server's endpoint as against any hub: JSON routed by its type,
// binary sent, reconnection with a message queued meanwhile.
// Run with: node --test clients/js/test/e2e.test.mjs
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

import { startServer, stopAll } from "./support/server.mjs";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const RESULTS = resolve(dirname(fileURLToPath(import.meta.url)), "../test-results");
const STEP = 20_000; // the longest any single expectation may wait

let server;
let browser;
const pages = [];

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
  server = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    // Playwright gives every launch a fresh, empty profile directory of its own.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  await stopAll();
});

/** A page of its own browser context (its own localStorage), on the demo page. */
async function openDemo(name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  page.errors = [];
  page.on("pageerror", (error) => page.errors.push(String(error)));
  page.label = name;
  pages.push(page);
  await page.goto(`${server.http}/websocket`);
  await expectState(page, "connected");
  return page;
}

const testid = (page, id) => page.locator(`[data-testid="${id}"]`);

async function expectState(page, state) {
  await testid(page, "state").and(page.locator(`[data-state="${state}"]`)).waitFor();
}

async function join(page, name, room) {
  await testid(page, "name").fill(name);
  await testid(page, "name").press("Tab"); // "change" fires on blur
  await testid(page, "room").fill(room);
  await testid(page, "join").click();
  await page.locator(`[data-testid="current-room"]:text-is("${room}")`).waitFor();
}

async function say(page, text) {
  await testid(page, "message").fill(text);
  await testid(page, "send").click();
}

/** Waits until the page's message list shows `text` (exact text of a message's body). */
async function expectMessage(page, text) {
  await testid(page, "messages").locator("li", { hasText: text }).first().waitFor();
}

async function expectMembers(page, count) {
  await page.locator(`[data-testid="member-count"]:text-is("${count}")`).waitFor();
}

/**
 * Runs a test body; on failure (or always, with E2E_SCREENSHOTS=1), screenshots every page
 * into test-results/.
 */
async function withScreenshots(name, body) {
  try {
    await body();
    if (process.env.E2E_SCREENSHOTS) await screenshots(name);
  } catch (error) {
    await screenshots(name);
    throw error;
  }
}

async function screenshots(name) {
  mkdirSync(RESULTS, { recursive: true });
  for (const page of pages) {
    if (page.isClosed()) continue;
    const file = resolve(RESULTS, `${name}-${page.label}.png`);
    await page.screenshot({ path: file, fullPage: true, timeout: 5000 }).catch(() => {});
    console.error(`screenshot: ${file}; page errors: ${JSON.stringify(page.errors)}`);
  }
}

test("two people chat through the demo page, then the server restarts on the same port", { timeout: 120_000 }, async () => {
  await withScreenshots("chat-restart", async () => {
    const room = `e2e-${process.pid}`;
    const alice = await openDemo("alice");
    const bob = await openDemo("bob");

    await join(alice, "Alice", room);
    await join(bob, "Bob", room);
    await expectMembers(alice, 2);
    await expectMembers(bob, 2);

    await say(alice, "hello from Alice");
    await say(bob, "hello from Bob");
    for (const page of [alice, bob]) {
      await expectMessage(page, "hello from Alice");
      await expectMessage(page, "hello from Bob");
    }
    // Each sees the other by name in the member list (names come with their messages),
    // and itself marked "(you)".
    await testid(alice, "members").locator("li", { hasText: "Bob" }).waitFor();
    await testid(alice, "members").locator("li", { hasText: "Alice (you)" }).waitFor();
    await testid(bob, "members").locator("li", { hasText: "Alice" }).waitFor();
    await testid(bob, "members").locator("li", { hasText: "Bob (you)" }).waitFor();
    // The message order is the room's offset order, the same on both pages. (A page shows
    // its own message at once, as pending, until the room's copy replaces it: wait for both
    // copies.)
    for (const page of [alice, bob]) await testid(page, "messages").locator("li[data-offset]").nth(1).waitFor();
    const offsets = async (page) => testid(page, "messages").locator("li[data-offset]").evaluateAll((items) => items.map((li) => li.dataset.offset));
    assert.deepEqual(await offsets(alice), ["1", "2"]);
    assert.deepEqual(await offsets(bob), ["1", "2"]);

    // The server goes away: both pages say so.
    const port = server.port;
    await server.kill();
    await expectState(alice, "reconnecting");
    await expectState(bob, "reconnecting");
    assert.match(await testid(alice, "state").textContent(), /reconnecting/);

    // Alice types while the server is down: Send still works, the message waits in the
    // client's offline queue and shows as pending meanwhile.
    const offline = "typed while the server was down";
    assert.equal(await testid(alice, "send").isEnabled(), true, "Send is enabled while reconnecting");
    await say(alice, offline);
    await testid(alice, "messages").locator('li[data-status="pending"]', { hasText: offline }).waitFor();
    assert.equal(await testid(alice, "message").inputValue(), "", "the input is cleared once the message is shown");

    // It comes back on the same port; a backend publishes at once, before the pages are
    // back (or just after: either way they must show it exactly once).
    server = await startServer({ port });
    const published = await server.api("POST", "/api/publish", {
      room,
      data: { name: "backend", text: "published while you were away" },
    });
    assert.equal(published.status, 200);

    for (const page of [alice, bob]) {
      await expectState(page, "connected");
      await page.locator('[data-testid="state"][data-reconnects="1"]').waitFor();
      await expectMessage(page, "Reconnected.");
      await expectMessage(page, "published while you were away");
      await expectMessage(page, offline);
      // The history died with the old process: the page says messages may be missing.
      await testid(page, "notice").and(page.locator(":visible")).waitFor();
      await expectMembers(page, 2);
    }

    // Typing works again, on both sides.
    await say(bob, "still here?");
    await say(alice, "yes");
    for (const page of [alice, bob]) {
      await expectMessage(page, "still here?");
      await expectMessage(page, "yes");
      const texts = await testid(page, "messages").locator("li").allTextContents();
      assert.equal(texts.filter((t) => t.includes("published while you were away")).length, 1, `once on ${page.label}`);
      assert.equal(texts.filter((t) => t.includes(offline)).length, 1, `the queued message once on ${page.label}`);
    }
    // On Alice's page the queued message is no longer pending: sent, with its offset.
    const own = testid(alice, "messages").locator("li", { hasText: offline });
    assert.equal(await own.getAttribute("data-status"), "sent");
    assert.match(await own.textContent(), /#\d+/);
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  });
});

test("the page serves the client module it imports, with a JavaScript type", { timeout: 30_000 }, async () => {
  await withScreenshots("client-module", async () => {
    const page = await openDemo("module");
    const exported = await page.evaluate(async () => {
      const module = await import("/client.js");
      return Object.keys(module).sort();
    });
    assert.deepEqual(exported, ["WshubClient", "WshubError", "backoffDelay", "reconnectsAfter"]);
    // The page exposes its client; a request round trip through the real server.
    const rtt = await page.evaluate(() => window.wshub.ping());
    assert.ok(rtt >= 0);
  });
});

test("in the browser: going back online ends a reconnect's wait at once, and sends what was queued", { timeout: 90_000 }, async () => {
  await withScreenshots("online", async () => {
    const room = `e2e-online-${process.pid}`;
    const page = await openDemo("online");
    await join(page, "Watcher", room);
    // A second client in the page whose next attempt, after a drop, is ~2 minutes away.
    const first = await page.evaluate(async () => {
      const { WshubClient } = await import("/client.js");
      const client = new WshubClient({
        minReconnectDelay: 120_000,
        maxReconnectDelay: 120_000,
        random: () => 0.99,
        shouldReconnect: () => true, // /api/disconnect closes with 1000
      });
      window.slow = client;
      window.onlineEvents = 0;
      window.addEventListener("online", () => (window.onlineEvents += 1));
      await new Promise((resolve, reject) => {
        client.on("open", resolve);
        setTimeout(() => reject(new Error("no open in 10 s")), 10_000);
        client.connect();
      });
      return client.clientId;
    });
    await server.api("POST", "/api/disconnect", { client: first });
    await page.waitForFunction(() => window.slow.state === "reconnecting");
    // Published while waiting: kept in the offline queue.
    await page.evaluate((room) => {
      window.queued = window.slow.publish(room, { name: "queued", text: "sent from the offline queue" }).then(
        (ok) => ok.offset,
        (error) => `rejected: ${error.code}`,
      );
    }, room);

    const context = page.context();
    await context.setOffline(true);
    await context.setOffline(false);
    await page.waitForFunction(() => window.onlineEvents > 0, null, { timeout: 5000 });
    await page.waitForFunction(() => window.slow.state === "connected", null, { timeout: 10_000 });
    const back = await page.evaluate(() => window.slow.clientId);
    assert.notEqual(back, first, "a new connection, long before the backoff delay");
    assert.equal(typeof (await page.evaluate(() => window.queued)), "number");
    await expectMessage(page, "sent from the offline queue");
    await page.evaluate(() => window.slow.close());
    await expectState(page, "connected");
    const texts = await testid(page, "messages").locator("li").allTextContents();
    assert.equal(texts.filter((t) => t.includes("sent from the offline queue")).length, 1);
    assert.deepEqual(page.errors, []);
  });
});

test("in the browser: Chromium negotiates permessage-deflate with --compression; large messages arrive intact", { timeout: 60_000 }, async () => {
  const compressing = await startServer({ args: ["--compression"] });
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  page.errors = [];
  page.on("pageerror", (error) => page.errors.push(String(error)));
  page.label = "deflate";
  pages.push(page);
  try {
    await withScreenshots("deflate", async () => {
      await page.goto(`${compressing.http}/websocket`);
      await expectState(page, "connected");
      // The demo page's own client, over Chromium's WebSocket.
      const extensions = await page.evaluate(() => window.wshub.extensions);
      assert.match(extensions, /^permessage-deflate/);
      assert.match(extensions, /server_no_context_takeover/);
      const room = `e2e-deflate-${process.pid}`;
      const result = await page.evaluate(async (room) => {
        const { WshubClient } = await import("/client.js");
        const sender = new WshubClient();
        const receiver = new WshubClient();
        const opened = (client) =>
          new Promise((resolve) => {
            client.on("open", resolve);
            client.connect();
          });
        await Promise.all([opened(sender), opened(receiver)]);
        const big = { text: "a browser compresses with context takeover; ".repeat(1000) };
        const warmUp = { text: "warm-up ".repeat(100) };
        const seen = [];
        await receiver.subscribe(room, (frame) => frame.type === "message" && seen.push(frame.data));
        // The second message is compressed against the first in Chromium's kept context.
        await sender.publish(room, warmUp);
        await sender.publish(room, big);
        for (let i = 0; i < 250 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
        const ext = sender.extensions;
        sender.close();
        receiver.close();
        return { same: JSON.stringify(seen) === JSON.stringify([warmUp, big]), ext, count: seen.length };
      }, room);
      assert.equal(result.same, true, `received ${result.count} of 2`);
      assert.match(result.ext, /^permessage-deflate/);
      assert.deepEqual(page.errors, []);
    });
  } finally {
    await compressing.kill();
  }
});

test("in the browser: the plain WebSocket client routes JSON, queues while reconnecting, sends binary", { timeout: 60_000 }, async () => {
  await withScreenshots("plain-client", async () => {
    const page = await openDemo("plain");
    const exported = await page.evaluate(async () => Object.keys(await import("/websocket.js")).sort());
    assert.deepEqual(exported, ["SERVICE_RESTART", "WebSocketClient", "backoffDelay", "reconnectsAfter"]);

    // A plain client on the page's own host ("/ws" resolves to ws://host/ws): the server's
    // frames are JSON with a `type`, routed like an application's. /api/disconnect closes
    // with 1000, final by default: this client reconnects anyway.
    const first = await page.evaluate(async () => {
      const { WebSocketClient } = await import("/websocket.js");
      const client = new WebSocketClient("/ws", { minReconnectDelay: 50, maxReconnectDelay: 200, shouldReconnect: () => true });
      window.plain = client;
      window.welcomes = [];
      window.pongs = [];
      window.closes = [];
      client.route("welcome", (frame) => window.welcomes.push(frame.client));
      client.route("pong", (frame) => window.pongs.push(frame.id));
      client.on("close", ({ code }) => window.closes.push(code));
      client.connect();
      for (let i = 0; i < 500 && window.welcomes.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      client.sendJson({ type: "ping", id: 1 });
      for (let i = 0; i < 500 && window.pongs.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      return { welcomes: window.welcomes, pongs: window.pongs, url: client.socket.url };
    });
    assert.equal(first.welcomes.length, 1);
    assert.deepEqual(first.pongs, [1]);
    assert.equal(first.url, `${server.ws}`);

    // Dropped by the server: a ping sent while reconnecting waits in the offline queue and
    // is answered on the next connection, once.
    await server.api("POST", "/api/disconnect", { client: first.welcomes[0] });
    await page.waitForFunction(() => window.closes.length === 1);
    const queued = await page.evaluate(() => window.plain.sendJson({ type: "ping", id: 2 }));
    assert.equal(queued, true);
    await page.waitForFunction(() => window.welcomes.length === 2 && window.pongs.length === 2, null, { timeout: 10_000 });
    assert.deepEqual(await page.evaluate(() => window.pongs), [1, 2]);

    // Binary from the browser: the protocol endpoint takes text only and closes with 1003,
    // which is final for a client whose own input was refused.
    const binary = await page.evaluate(async () => {
      const { WebSocketClient } = await import("/websocket.js");
      const client = new WebSocketClient("/ws");
      const closed = new Promise((resolve) => client.on("close", resolve));
      await new Promise((resolve) => {
        client.on("open", resolve);
        client.connect();
      });
      client.send(new Uint8Array([1, 2, 3]));
      const { code } = await closed;
      return { code, state: client.state };
    });
    assert.deepEqual(binary, { code: 1003, state: "closed" });
    await page.evaluate(() => window.plain.close());
    assert.deepEqual(page.errors, []);
  });
});
