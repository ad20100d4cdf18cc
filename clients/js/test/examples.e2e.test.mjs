// The wshub library's example pages in headless Chromium: `monitor` (a live chart drawn on
// a canvas, no external scripts), `notifications` (a notification POSTed for one user shows
// on that user's page only) and `chat` (two people, names, joined/left notices). Each
// example binary is started on 127.0.0.1:0 by this file and killed by its `after` hook.
// The monitor and notifications pages use the plain WebSocket client (src/websocket.js,
// served by the example at /websocket.js); the chat page the browser's WebSocket alone.
//
// Binaries: target/debug/examples/{monitor,notifications,chat} (under $CARGO_TARGET_DIR when set),
// built with cargo first when missing (test.sh builds them). Chromium: $CHROMIUM, or
// /usr/bin/chromium.
// Run with: node --test clients/js/test/examples.e2e.test.mjs
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const TARGET = process.env.CARGO_TARGET_DIR || resolve(REPO, "target");
const STEP = 20_000; // the longest any single expectation may wait

const children = [];
let browser;

/** Starts `examples/<name> 127.0.0.1:0 ...args`; resolves to its `http://addr`. */
async function startExample(name, args = []) {
  const binary = resolve(TARGET, "debug/examples", name);
  if (!existsSync(binary)) {
    const built = spawnSync("cargo", ["build", "-p", "wshub", "--example", name], {
      cwd: REPO,
      stdio: "inherit",
      timeout: 15 * 60 * 1000,
    });
    assert.equal(built.status, 0, `cargo build of the ${name} example failed`);
  }
  const child = spawn(binary, ["127.0.0.1:0", ...args], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  const lines = createInterface({ input: child.stdout });
  let timer;
  const line = await Promise.race([
    new Promise((resolve) => lines.once("line", resolve)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${name} did not start`)), STEP);
    }),
  ]);
  clearTimeout(timer);
  lines.on("line", () => {});
  const match = /open (http:\/\/[^/\s]+)\//.exec(line);
  assert.ok(match, `unexpected first line from ${name}: ${line}`);
  return match[1];
}

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
  for (const child of children) child.kill("SIGKILL");
});

async function open(url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  page.errors = [];
  page.on("pageerror", (error) => page.errors.push(String(error)));
  const external = [];
  page.on("request", (request) => {
    if (!request.url().startsWith(url.replace(/\/$/, ""))) external.push(request.url());
  });
  page.external = external;
  await page.goto(url);
  return page;
}

test("monitor draws live samples of the machine and the hub", async () => {
  const base = await startExample("monitor", ["200"]);
  const page = await open(`${base}/`);
  await page.locator("#state", { hasText: "live" }).waitFor();
  await page.locator("#conns", { hasText: "1" }).waitFor();
  await page.waitForFunction(() => (window.drawnSamples || 0) >= 3, null, { timeout: STEP });
  assert.match(await page.locator("#cpu").textContent(), /^\d+(\.\d)?%$/);
  assert.match(await page.locator("#mem").textContent(), /GiB$/);
  // The chart has pixels on it: some are not the background.
  const painted = await page.evaluate(() => {
    const canvas = document.getElementById("chart");
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let colored = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i + 3] > 0) colored++;
    return colored;
  });
  assert.ok(painted > 100, `the canvas is blank (${painted} pixels)`);
  // A second page is counted by the first.
  const second = await open(`${base}/`);
  await page.locator("#conns", { hasText: "2" }).waitFor();
  assert.deepEqual(page.errors, []);
  assert.deepEqual(page.external, [], "no external scripts or requests");
  await second.context().close();
  await page.context().close();
});

test("chat pages name their people and tell the room who joined and left", async () => {
  const base = await startExample("chat");
  const alice = await open(`${base}/`);
  await alice.locator("#name").fill("alice");
  await alice.locator("#room").fill("e2e");
  await alice.locator("#who button").click();
  await alice.locator("#state", { hasText: "connected as alice" }).waitFor();
  const bob = await open(`${base}/websocket`);
  await bob.locator("#name").fill("bob");
  await bob.locator("#room").fill("e2e");
  await bob.locator("#who button").click();
  await bob.locator("#state", { hasText: "connected as bob" }).waitFor();
  await alice.locator(".notice", { hasText: "bob joined" }).waitFor();
  await bob.locator("#msg").fill("hi alice");
  await bob.locator("#say button").click();
  await alice.locator(".line", { hasText: "bob: hi alice" }).waitFor();
  await bob.locator(".line.mine", { hasText: "bob: hi alice" }).waitFor();
  await bob.context().close();
  await alice.locator(".notice", { hasText: "bob left" }).waitFor();
  assert.deepEqual(alice.errors, []);
  await alice.context().close();
});

test("a notification for one user shows on that user's pages only", async () => {
  const base = await startExample("notifications");
  const openAs = async (name) => {
    const page = await open(`${base}/`);
    await page.locator("#me").fill(name);
    await page.locator("#go").click();
    await page.locator("#state", { hasText: `connected as ${name}` }).waitFor();
    return page;
  };
  const alice = await openAs("alice");
  const bob = await openAs("bob");
  const response = await fetch(`${base}/notify`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user: "alice", title: "Build done", body: "main is green" }),
    signal: AbortSignal.timeout(STEP),
  });
  assert.deepEqual(await response.json(), { delivered: 1 });
  await alice.locator(".toast", { hasText: "Build done" }).waitFor();
  // bob's page sends one to everyone from its form; both pages show it, and bob never
  // got alice's.
  await bob.locator("#title").fill("Maintenance");
  await bob.locator("#send").click();
  await bob.locator("#result", { hasText: "delivered to 2" }).waitFor();
  await bob.locator("#history", { hasText: "Maintenance" }).waitFor();
  await alice.locator("#history", { hasText: "Maintenance" }).waitFor();
  assert.equal(await bob.locator("#history", { hasText: "Build done" }).count(), 0);
  assert.deepEqual([...alice.errors, ...bob.errors], []);
  await alice.context().close();
  await bob.context().close();
});
