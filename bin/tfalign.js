#!/usr/bin/env node
// The tfalign command line. Sources are TypeScript, loaded through tsx (no build step needed).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv);
