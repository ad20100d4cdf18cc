// The hand-written TypeScript declarations name exactly what the modules export, and every
// public member of WshubClient. (Their types are checked by `npm run typecheck`.)
// Run with: node --test clients/js/test/declarations.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import * as wshub from "../src/wshub.js";
import * as react from "../src/react.js";

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

test("WshubClient's declared members are its public ones", () => {
  const source = read("wshub.d.ts");
  const body = /^export class WshubClient \{\n([\s\S]*?)^\}/m.exec(source)[1];
  const declared = unique(
    [...body.matchAll(/^ {2}(?:readonly )?(\w+)\??[<(:]/gm)].map((m) => m[1]).filter((name) => name !== "constructor"),
  );
  const prototype = Object.getOwnPropertyNames(wshub.WshubClient.prototype).filter(
    (name) => name !== "constructor" && !name.startsWith("_"),
  );
  const instance = Object.keys(new wshub.WshubClient({ url: "ws://127.0.0.1:9/ws" })).filter((name) => !name.startsWith("_"));
  assert.deepEqual(declared, unique([...prototype, ...instance]));
});
