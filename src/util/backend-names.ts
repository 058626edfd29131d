/**
 * The names `--backend` and `backend:` accept (plain data, no tfjs, so schemas and the command
 * line can list them without loading tensors): `auto` tries tfjs-node-gpu, tfjs-node, then wasm;
 * the others name one backend. `src/backend.ts` selects and initialises them.
 */
export const BACKEND_NAMES = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
