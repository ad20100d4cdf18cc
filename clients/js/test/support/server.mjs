// The real `wshub` binary as a child process, for the tests that talk to a server; and
// the library's `echo` example (crates/wshub/examples/echo.rs), a plain hub that speaks no
// protocol of its own, for the plain WebSocket client.
//
// The binary is `$WSHUB_BIN` when set (test.sh builds it once and sets it); otherwise
// `target/debug/wshub` of this repository, built with cargo first if it is missing. The
// echo example likewise: `$ECHO_BIN`, or `target/debug/examples/echo`.
// Every server listens on loopback only, is started with the API key `k`, and must be
// stopped by the test's `after` hook (`stopAll()` stops whatever is left).
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

export const API_KEY = "k";
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");

let binary = null;

/** The path of the `wshub` binary, built with cargo when there is none. */
export function wshubBinary() {
  if (binary) return binary;
  if (process.env.WSHUB_BIN) {
    binary = process.env.WSHUB_BIN;
    return binary;
  }
  const built = resolve(REPO, "target/debug/wshub");
  if (!existsSync(built)) {
    const result = spawnSync("cargo", ["build", "-p", "wshub-server", "--bin", "wshub"], {
      cwd: REPO,
      stdio: "inherit",
      timeout: 15 * 60 * 1000,
    });
    if (result.status !== 0) throw new Error("cargo build of the wshub binary failed");
  }
  binary = built;
  return binary;
}

let echo = null;

/** The path of the library's echo example, built with cargo when there is none. */
export function echoBinary() {
  if (echo) return echo;
  if (process.env.ECHO_BIN) {
    echo = process.env.ECHO_BIN;
    return echo;
  }
  const built = resolve(REPO, "target/debug/examples/echo");
  if (!existsSync(built)) {
    const result = spawnSync("cargo", ["build", "-p", "wshub", "--example", "echo"], {
      cwd: REPO,
      stdio: "inherit",
      timeout: 15 * 60 * 1000,
    });
    if (result.status !== 0) throw new Error("cargo build of the echo example failed");
  }
  echo = built;
  return echo;
}

const running = new Set();

/**
 * Starts the echo example on `127.0.0.1:<port>` (0: the system chooses; a fixed port is
 * retried for a while) and waits for its first line, `echo: ws://ADDR/ (any path); ...`.
 * Resolves to `{addr, port, ws, kill, stop, freeze, thaw}` like `startServer`.
 */
export async function startEcho({ port = 0, timeout = 20_000 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      const { child, line } = await spawnUntilFirstLine(
        echoBinary(),
        [`127.0.0.1:${port}`],
        { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" },
        Math.max(1000, deadline - Date.now()),
      );
      const match = /^echo: ws:\/\/(\S+?)\//.exec(line);
      if (!match) {
        await stop(child, "SIGKILL");
        throw new Error(`unexpected first line from echo: ${line}`);
      }
      const addr = match[1];
      return {
        addr,
        port: Number(addr.slice(addr.lastIndexOf(":") + 1)),
        ws: `ws://${addr}/`,
        process: child,
        kill: () => stop(child, "SIGKILL"),
        // The example stops gracefully on Ctrl-C (SIGINT): close 1001 to every client.
        stop: () => stop(child, "SIGINT"),
        freeze: () => child.kill("SIGSTOP"),
        thaw: () => child.kill("SIGCONT"),
      };
    } catch (error) {
      if (port === 0 || Date.now() > deadline) throw error;
      await sleep(100);
    }
  }
}

/** Spawns `binary`, tracked for `stopAll()`, and waits for its first stdout line. */
async function spawnUntilFirstLine(binary, args, env, timeout) {
  const child = spawn(binary, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  child.exited = exited;
  exited.then(() => running.delete(child));
  const lines = createInterface({ input: child.stdout });
  const firstLine = new Promise((resolve) => lines.once("line", resolve));
  let timer;
  const outcome = await Promise.race([
    firstLine.then((line) => ({ line })),
    exited.then((exit) => ({ exit })),
    new Promise((resolve) => {
      timer = setTimeout(() => resolve({ timeout: true }), timeout);
    }),
  ]);
  clearTimeout(timer);
  if (!outcome.line) {
    child.kill("SIGKILL");
    await exited;
    throw new Error(`${binary} did not start (${JSON.stringify(outcome)}): ${stderr}`);
  }
  // Keep draining stdout so that the server never blocks on a full pipe.
  lines.on("line", () => {});
  return { child, line: outcome.line };
}

/**
 * Starts `wshub --listen 127.0.0.1:<port> --api-key k ...args` and waits for its first
 * stdout line, `wshub listening on ADDR: ...`.
 * @param {{port?: number, args?: string[], timeout?: number}} [options] `port` 0 (the
 *   default) lets the system choose; a fixed port is retried for a while, since the
 *   previous server on it may still be releasing it.
 */
export async function startServer({ port = 0, args = [], timeout = 20_000 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return await startOnce(port, args, Math.max(1000, deadline - Date.now()));
    } catch (error) {
      if (port === 0 || Date.now() > deadline) throw error;
      await sleep(100);
    }
  }
}

async function startOnce(port, args, timeout) {
  // Settings from the environment (WSHUB_*) would change what the tests expect.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("WSHUB_")));
  env.RUST_LOG = env.RUST_LOG || "warn";
  const { child, line } = await spawnUntilFirstLine(
    wshubBinary(),
    ["--listen", `127.0.0.1:${port}`, "--api-key", API_KEY, "--log-level", "warn", ...args],
    env,
    timeout,
  );
  const match = /^wshub listening on (\S+?):? /.exec(line) || /listening on (\S+):/.exec(line);
  if (!match) {
    await stop(child, "SIGKILL");
    throw new Error(`unexpected first line from wshub: ${line}`);
  }
  const addr = match[1].replace(/:$/, "");
  const server = {
    addr,
    port: Number(addr.slice(addr.lastIndexOf(":") + 1)),
    http: `http://${addr}`,
    ws: `ws://${addr}/ws`,
    process: child,
    /** Kills the process (SIGKILL: no goodbye to the clients) and waits for it to exit. */
    kill: () => stop(child, "SIGKILL"),
    /** Stops it gracefully (SIGTERM: a drain, its clients closed with 1012), killing it if it takes over 5 s. */
    stop: () => stop(child, "SIGTERM"),
    /** Freezes the process: its sockets stay open but nothing is answered. */
    freeze: () => child.kill("SIGSTOP"),
    thaw: () => child.kill("SIGCONT"),
    /** Calls the HTTP API with the key. */
    api: (method, path, body) => api(`http://${addr}`, method, path, body),
  };
  return server;
}

async function stop(child, signal) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGCONT");
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await child.exited;
  clearTimeout(timer);
}

/** Stops every server still running (for `after` hooks). */
export async function stopAll() {
  await Promise.all([...running].map((child) => stop(child, "SIGKILL")));
}

/** An HTTP API call with the API key; resolves to `{status, body}`. */
export async function api(base, method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await response.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Not JSON: kept as text.
  }
  return { status: response.status, body: parsed };
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `check` until it returns a truthy value (returned), or fails after `timeout` ms
 * with `what` in the message.
 */
export async function waitFor(what, check, { timeout = 5000, interval = 20 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(interval);
  }
}

/** The next `event` of a client, or a rejection after `timeout` ms. */
export function nextEvent(client, event, { timeout = 5000, filter = () => true } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} event within ${timeout} ms`));
    }, timeout);
    const off = client.on(event, (value) => {
      if (!filter(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}
