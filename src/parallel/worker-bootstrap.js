// Entry point of a data-parallel worker thread (see worker.ts). Node 20 workers do not inherit
// the parent's module hooks, so TypeScript sources need tsx's loader registered here first
// (as bin/tfalign.js does for the command line); `execArgv: ['--import', 'tsx']` does not reach
// a worker's own ESM loader on Node 20.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
