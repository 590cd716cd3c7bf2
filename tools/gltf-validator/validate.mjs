#!/usr/bin/env node
// Validate one glTF 2.0 asset with the Khronos glTF validator and print its JSON report to stdout.
//
// Usage:
//   node validate.mjs path/to/asset.glb      (or .gltf; external buffers/images are read beside it)
//   node validate.mjs - < asset.glb          (bytes on stdin; format auto-detected, no external resources)
//
// Options (after the path):
//   --max-issues N   cap the number of reported messages (default 0 = unlimited)
//
// Exit status: 0 when a report was printed (whatever it contains), 2 on bad usage or an unreadable file,
// 3 when the validator rejected the input outright (e.g. format not detectable).

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import process from 'node:process';
import { validateBytes, version } from 'gltf-validator';

function usage(message) {
  process.stderr.write(`${message}\nusage: node validate.mjs <file.glb|file.gltf|-> [--max-issues N]\n`);
  process.exit(2);
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function main() {
  const args = process.argv.slice(2);
  if (args.length < 1) usage('missing input path');
  const input = args[0];
  let maxIssues = 0;
  for (let i = 1; i < args.length; i++) {
    if (args[i] === '--max-issues' && i + 1 < args.length) {
      maxIssues = Number.parseInt(args[++i], 10);
      if (!Number.isFinite(maxIssues) || maxIssues < 0) usage('--max-issues needs a non-negative integer');
    } else {
      usage(`unknown argument: ${args[i]}`);
    }
  }

  let data;
  let baseDir = null;
  let uri = 'stdin';
  try {
    if (input === '-') {
      data = await readStdin();
    } else {
      const full = path.resolve(input);
      data = await readFile(full);
      baseDir = path.dirname(full);
      uri = path.basename(full);
    }
  } catch (err) {
    process.stderr.write(`cannot read ${input}: ${err}\n`);
    process.exit(2);
  }

  const options = { uri, maxIssues, writeTimestamp: false };
  const ext = path.extname(uri).toLowerCase();
  if (ext === '.glb') options.format = 'glb';
  else if (ext === '.gltf') options.format = 'gltf';
  if (baseDir !== null) {
    options.externalResourceFunction = async (resourceUri) => {
      const resolved = path.resolve(baseDir, decodeURIComponent(resourceUri));
      try {
        return new Uint8Array(await readFile(resolved));
      } catch (err) {
        throw `${err}`;
      }
    };
  }

  let report;
  try {
    report = await validateBytes(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), options);
  } catch (err) {
    process.stderr.write(`glTF validator ${version()} rejected the input: ${err}\n`);
    process.exit(3);
  }
  process.stdout.write(JSON.stringify(report, null, 2) + '\n');
}

main();
