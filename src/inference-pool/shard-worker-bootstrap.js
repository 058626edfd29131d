// Entry point of a `ShardPool` worker thread (see shard-worker.ts). As in worker-bootstrap.js,
// Node 20 workers do not inherit the parent's module hooks, so tsx's loader is registered here
// before the TypeScript worker is imported.
import { register } from 'tsx/esm/api';

register();
await import('./shard-worker.ts');
