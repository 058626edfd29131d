/**
 * Where a run keeps its files. One folder per run under the project folder:
 *
 *   PROJECT/tfalign.db                         runs, rounds, stages, artifacts, samples, metrics
 *   PROJECT/RUN/prompts/{train,heldout}.jsonl  the prompt sets, fixed at run creation
 *   PROJECT/RUN/base/                          tokenizer, corpus and pretraining of a from-scratch base
 *   PROJECT/RUN/round-N/<stage>/               each stage's outputs (removed and redone if the stage
 *                                              was interrupted)
 */
import * as path from 'node:path';
import { defaultStorePath } from '../store/store.js';

export class RunLayout {
  constructor(
    readonly project: string,
    readonly name: string,
  ) {}

  get database(): string {
    return defaultStorePath(this.project);
  }

  get runDir(): string {
    return path.join(this.project, this.name);
  }

  get trainPrompts(): string {
    return path.join(this.runDir, 'prompts', 'train.jsonl');
  }

  get heldoutPrompts(): string {
    return path.join(this.runDir, 'prompts', 'heldout.jsonl');
  }

  get baseDir(): string {
    return path.join(this.runDir, 'base');
  }

  roundDir(round: number): string {
    return path.join(this.runDir, `round-${round}`);
  }

  stageDir(round: number, stage: string): string {
    return round === 0 ? this.baseDir : path.join(this.roundDir(round), stage);
  }
}
