#!/usr/bin/env node
/**
 * The `tfalign` executable: the package's `bin` is this file compiled (`dist/src/cli/bin.js`),
 * run by plain Node with no TypeScript loader. Only the command tree loads here; each command
 * imports the library modules it needs (tfjs, SQLite, …) when it runs, so `--help` starts fast.
 */
import { main } from './main.js';

await main(process.argv);
