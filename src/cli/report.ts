/**
 * `tfalign report --run NAME --out report.html`: one self-contained HTML page of a run (rounds
 * table, metric charts, training curves, reward distributions), readable offline. Read-only: it
 * opens the database for reading and takes no lock, so it works while a run is in progress.
 */
import type { Command } from 'commander';
import { example, openStoreReadOnly } from './common.js';
import { writeRunReport } from '../report/html.js';

export function registerReportCommands(program: Command): void {
  program
    .command('report')
    .description('write one self-contained HTML page of a run: rounds, metrics per round, training curves, reward distributions (read-only)')
    .requiredOption('--run <name>', 'run name')
    .requiredOption('--out <file>', 'HTML file to write (replaced atomically)')
    .option('--project <dir>', 'project folder holding tfalign.db', '.')
    .addHelpText('after', example('tfalign report --project runs --run quickstart --out report.html'))
    .action((o: { run: string; out: string; project: string }) => {
      const store = openStoreReadOnly(o.project);
      try {
        const { bytes, report } = writeRunReport(store, o.run, o.out, { project: o.project });
        const numRounds = report.summaries.filter((s) => s.roundIndex > 0).length;
        console.log(`report: ${o.out} (${(bytes / 1024).toFixed(0)} KiB): run "${o.run}", ${numRounds} round${numRounds === 1 ? '' : 's'}, ${report.curves.length} training curves`);
      } finally {
        store.close();
      }
    });
}
