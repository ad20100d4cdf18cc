// The hand-written TypeScript declarations name exactly what the modules export, and every
// public member of WshubClient and WebSocketClient. (Their types are checked by `npm run typecheck`.)
// Run with: node --test clients/js/test/declarations.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import * as wshub from "../src/wshub.js";
import * as react from "../src/react.js";
import * as websocket from "../src/websocket.js";

const read = (name) => readFileSync(new URL(`../src/${name}`, import.meta.url), "utf8");
const declaredValues = (source) =>
  [...source.matchAll(/^export (?:declare )?(?:class|function|const) (\w+)/gm)].map((m) => m[1]);
const unique = (names) => [...new Set(names)].sort();

test("wshub.d.ts declares every export of wshub.js, and nothing else", () => {
  assert.deepEqual(unique(declaredValues(read("wshub.d.ts"))), Object.keys(wshub).sort());
});

test("react.d.ts declares every export of react.js, and nothing else", () => {
  assert.deepEqual(unique(declaredValues(read("react.d.ts"))), Object.keys(react).sort());
});

test("websocket.d.ts declares every export of websocket.js, and nothing else", () => {
  assert.deepEqual(unique(declaredValues(read("websocket.d.ts"))), Object.keys(websocket).sort());
});

/** The members `file` declares in `class name`, and the public ones of `instance`. */
function members(file, name, instance) {
  const body = new RegExp(`^export class ${name} \\{\\n([\\s\\S]*?)^\\}`, "m").exec(read(file))[1];
  const declared = unique(
    [...body.matchAll(/^ {2}(?:readonly )?(\w+)\??[<(:]/gm)].map((m) => m[1]).filter((member) => member !== "constructor"),
  );
  const prototype = Object.getOwnPropertyNames(Object.getPrototypeOf(instance)).filter(
    (member) => member !== "constructor" && !member.startsWith("_"),
  );
  const own = Object.keys(instance).filter((member) => !member.startsWith("_"));
  return { declared, actual: unique([...prototype, ...own]) };
}

test("WshubClient's declared members are its public ones", () => {
  const { declared, actual } = members("wshub.d.ts", "WshubClient", new wshub.WshubClient({ url: "ws://127.0.0.1:9/ws" }));
  assert.deepEqual(declared, actual);
});

test("WebSocketClient's declared members are its public ones", () => {
  const { declared, actual } = members("websocket.d.ts", "WebSocketClient", new websocket.WebSocketClient("ws://127.0.0.1:9/"));
  assert.deepEqual(declared, actual);
});
