#!/usr/bin/env node
// Builds the native matrix-product addon (binding.gyp → build/Release/tfalign_native.node) with
// node-gyp; run by `npm ci`/`npm install` (the package's `install` script) and `npm run build:native`.
// It never fails the install: without a compiler or Node headers tfalign runs its matrix products
// on XNNPACK, and this prints one line saying so.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** node-gyp: the one npm hands its scripts, else the one bundled with the npm next to this node. */
function nodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  return candidates.find((p) => p && fs.existsSync(p));
}

/** Offline builds: the running node's own headers (e.g. /usr/include/node) when npm names no nodedir. */
function nodedirArgs() {
  if (process.env.npm_config_nodedir) return [];
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${prefix}`] : [];
}

function notice(why) {
  process.stderr.write(`tfalign: native matmul addon not built (${why}); matrix products will run on XNNPACK\n`);
}

if (process.arch !== 'x64') {
  notice(`${process.arch}: the kernels are x86-64 AVX2/AVX-512`);
} else {
  const gyp = nodeGyp();
  if (!gyp) notice('node-gyp not found');
  else {
    const r = spawnSync(process.execPath, [gyp, 'rebuild', '--release', ...nodedirArgs()], { cwd: root, encoding: 'utf8' });
    if (r.status === 0) process.stderr.write('tfalign: native matmul addon built (build/Release/tfalign_native.node)\n');
    else {
      const lines = `${r.stdout ?? ''}\n${r.stderr ?? ''}`.split('\n');
      const why = lines.find((l) => /error:|Error:/.test(l)) ?? lines.find((l) => /ERR!/.test(l));
      notice(why?.replace(/^gyp ERR! (stack )?/, '').trim() || `node-gyp exited with ${r.status ?? r.signal}`);
    }
  }
}
