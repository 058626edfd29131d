/** Squared difference and squared norm of two parameter tensors' values (for relative errors). */
export function squaredDiffAndNorm(x: ArrayLike<number>, y: ArrayLike<number>): { diff: number; norm: number } {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < x.length; i++) {
    diff += (x[i]! - y[i]!) ** 2;
    norm += x[i]! ** 2;
  }
  return { diff, norm };
}
