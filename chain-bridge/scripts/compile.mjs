#!/usr/bin/env node
// Compiles the chain bridge's contracts offline with the pinned solcjs, from the committed
// Solidity standard-JSON input contracts/standard-input.json.
//
//   node scripts/compile.mjs          rewrites the input's `sources` from contracts/*.sol and
//                                     their imports, then writes contracts/build/<Name>.json
//   node scripts/compile.mjs --check  changes nothing; exits 1 when the committed input or build
//                                     no longer match what the sources and pinned solc give
//
// The committed input is the single place for compiler settings (optimizer, evmVersion, output
// selection): this script keeps them and only rewrites `sources`. Each source is listed under a
// fixed source unit name (`contracts/CarbonToken.sol`, `@openzeppelin/contracts/...`) with its
// keccak256 and the path it is read from (relative to chain-bridge/); solc refuses content
// whose hash differs, so an OpenZeppelin file that changed under node_modules fails loudly.
// Only npm packages pinned in package-lock.json are used: nothing is downloaded.

import { readdirSync, readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const solc = require("solc");
const { keccak256 } = require("js-sha3");

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const CONTRACTS_DIR = join(ROOT, "contracts");
const INPUT_PATH = join(CONTRACTS_DIR, "standard-input.json");
const BUILD_DIR = join(CONTRACTS_DIR, "build");
// The contracts whose artifacts are written (and that the Rust bindings read).
const ARTIFACTS = ["CarbonToken", "CarbonStaking", "LedgerAnchor"];

function fail(message) {
  console.error(`compile: ${message}`);
  process.exit(1);
}

// Source unit name -> file path relative to ROOT. Only our contracts and OpenZeppelin resolve.
function pathOfSource(name) {
  if (/^contracts\/[A-Za-z0-9_]+\.sol$/.test(name)) return name;
  if (name.startsWith("@openzeppelin/contracts/") && !name.includes("..")) {
    return join("node_modules", name);
  }
  return null;
}

function readSource(name) {
  const path = pathOfSource(name);
  if (path === null) return { error: `source ${name} is neither contracts/*.sol nor @openzeppelin/contracts/...` };
  const full = join(ROOT, path);
  if (!existsSync(full)) return { error: `${path} not found (run: npm ci --prefix chain-bridge)` };
  return { path, content: readFileSync(full, "utf8") };
}

function errorsOf(output) {
  return (output.errors ?? []).filter((e) => e.severity === "error");
}

function compile(input, onImport) {
  const callback = (name) => {
    const source = readSource(name);
    if (source.error) return { error: source.error };
    onImport?.(name, source);
    return { contents: source.content };
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: callback }));
  const errors = errorsOf(output);
  if (errors.length > 0) fail(`solc failed:\n${errors.map((e) => e.formattedMessage).join("\n")}`);
  for (const w of output.errors ?? []) console.error(w.formattedMessage);
  return output;
}

// The input as committed: the settings of the committed file, and every source (ours and the
// transitive OpenZeppelin imports) with its keccak256 and where it is read from, sorted by name.
function freshInput(committed) {
  const roots = readdirSync(CONTRACTS_DIR)
    .filter((f) => f.endsWith(".sol"))
    .sort()
    .map((f) => `contracts/${f}`);
  const seen = new Map();
  const probe = {
    language: committed.language,
    sources: {},
    // Parsing only: resolves the import closure without generating code.
    settings: { ...committed.settings, outputSelection: {} },
  };
  for (const name of roots) {
    const source = readSource(name);
    if (source.error) fail(source.error);
    seen.set(name, source);
    probe.sources[name] = { content: source.content };
  }
  compile(probe, (name, source) => seen.set(name, source));
  const sources = {};
  for (const name of [...seen.keys()].sort()) {
    const { path, content } = seen.get(name);
    sources[name] = { keccak256: `0x${keccak256(content)}`, urls: [path] };
  }
  return { language: committed.language, sources, settings: committed.settings };
}

// The committed input with each source's content read from its url (solc checks the hash).
function withContents(input) {
  const sources = {};
  for (const [name, source] of Object.entries(input.sources)) {
    const read = readSource(name);
    if (read.error) fail(read.error);
    if (source.urls?.[0] !== read.path) fail(`${name}: url ${source.urls?.[0]} is not ${read.path}`);
    sources[name] = { ...source, content: read.content };
  }
  return { ...input, sources };
}

function artifacts(input) {
  const output = compile(withContents(input));
  const result = {};
  for (const name of ARTIFACTS) {
    const sourceName = `contracts/${name}.sol`;
    const contract = output.contracts?.[sourceName]?.[name];
    if (!contract) fail(`no output for ${sourceName}:${name}`);
    const artifact = {
      contractName: name,
      sourceName,
      compiler: `solc ${solc.version()}`,
      evmVersion: input.settings.evmVersion,
      abi: contract.abi,
      bytecode: `0x${contract.evm.bytecode.object}`,
      deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
    };
    if (artifact.bytecode === "0x") fail(`${name} has no bytecode (abstract?)`);
    result[name] = `${JSON.stringify(artifact, null, 2)}\n`;
  }
  return result;
}

function main() {
  const check = process.argv.includes("--check");
  if (!existsSync(INPUT_PATH)) fail(`${relative(ROOT, INPUT_PATH)} not found`);
  const committedText = readFileSync(INPUT_PATH, "utf8");
  const committed = JSON.parse(committedText);
  if (!committed.settings?.evmVersion) fail("the input must pin settings.evmVersion");
  const inputText = `${JSON.stringify(freshInput(committed), null, 2)}\n`;
  const built = artifacts(JSON.parse(inputText));

  if (check) {
    const stale = [];
    if (inputText !== committedText) stale.push(relative(ROOT, INPUT_PATH));
    for (const [name, text] of Object.entries(built)) {
      const path = join(BUILD_DIR, `${name}.json`);
      if (!existsSync(path) || readFileSync(path, "utf8") !== text) stale.push(relative(ROOT, path));
    }
    if (stale.length > 0) {
      fail(`out of date with the sources and solc ${solc.version()}: ${stale.join(", ")}\n` +
        "rerun: node chain-bridge/scripts/compile.mjs, and commit the result");
    }
    console.log(`compile: build matches (solc ${solc.version()}, evmVersion ${committed.settings.evmVersion})`);
    return;
  }

  writeFileSync(INPUT_PATH, inputText);
  mkdirSync(BUILD_DIR, { recursive: true });
  for (const [name, text] of Object.entries(built)) writeFileSync(join(BUILD_DIR, `${name}.json`), text);
  console.log(`compile: wrote ${Object.keys(built).length} artifacts (solc ${solc.version()}, evmVersion ${committed.settings.evmVersion})`);
}

main();
