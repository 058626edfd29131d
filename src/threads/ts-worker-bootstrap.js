// Entry of a worker thread started from the TypeScript sources (tests, `bin/tfalign.js`; see
// worker-entry.ts). Node 20 workers do not inherit the parent's module hooks, and
// `execArgv: ['--import', 'tsx']` does not reach a worker's own ESM loader, so tsx's loader is
// registered here before the `.ts` module named by the last argv entry is imported. Never
// shipped: compiled workers run their own `.js` module directly.
import { register } from 'tsx/esm/api';

register();
await import(process.argv[process.argv.length - 1]);
