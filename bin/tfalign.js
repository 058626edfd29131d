#!/usr/bin/env node
// The command line from the TypeScript sources, through tsx (development and the tests: no build
// step, never a stale dist/). The installed package's `tfalign` is the compiled
// dist/src/cli/bin.js (`npm run build`), which needs no loader.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/bin.ts');
