import { describe, expect, it } from 'vitest';
import { kmeans, nearestCentroid } from '../../../data/curation/kmeans.js';
import { Rng } from '../../../src/util/rng.js';

/** Three well-separated blobs in 5 dimensions, 30 points each (noise std 0.05), shuffled. */
function blobs(seed: number): { points: Float32Array; labels: number[]; centres: number[][] } {
  const centres = [
    [5, 0, 0, 0, 0],
    [0, 5, 0, 0, 1],
    [0, 0, -5, 2, 0],
  ];
  const rng = new Rng(seed);
  const order = rng.shuffle(Array.from({ length: 90 }, (_, i) => i));
  const points = new Float32Array(90 * 5);
  const labels: number[] = [];
  order.forEach((source, row) => {
    const blob = source % 3;
    labels.push(blob);
    for (let d = 0; d < 5; d++) points[row * 5 + d] = centres[blob]![d]! + rng.normal(0, 0.05);
  });
  return { points, labels, centres };
}

describe('kmeans', () => {
  it('recovers separable clusters and their centres', () => {
    const { points, labels, centres } = blobs(1);
    const result = kmeans(points, 5, { numClusters: 3, seed: 0 });
    expect(result.converged).toBe(true);
    expect(result.numClusters).toBe(3);
    // the same partition up to a renaming of clusters: blob → cluster is a bijection
    const clusterOfBlob = new Map<number, number>();
    labels.forEach((blob, i) => {
      const cluster = result.assignments[i]!;
      if (!clusterOfBlob.has(blob)) clusterOfBlob.set(blob, cluster);
      expect(cluster).toBe(clusterOfBlob.get(blob));
    });
    expect(new Set(clusterOfBlob.values()).size).toBe(3);
    // centres within a few noise widths of the true ones (mean of 30 points: std 0.05/√30 ≈ 0.009)
    for (const [blob, cluster] of clusterOfBlob) {
      for (let d = 0; d < 5; d++) expect(Math.abs(result.centroids[cluster * 5 + d]! - centres[blob]![d]!)).toBeLessThan(0.05);
    }
    // inertia: 90 points × 5 dims × 0.05² ≈ 1.1 (minus the fitted means); far below a wrong split
    expect(result.inertia).toBeGreaterThan(0.5);
    expect(result.inertia).toBeLessThan(2);
    expect(nearestCentroid(points, result.centroids, 5)).toEqual(result.assignments);
  });

  it('is deterministic for a seed and reduces k to the number of points', () => {
    const { points } = blobs(2);
    const a = kmeans(points, 5, { numClusters: 4, seed: 9 });
    const b = kmeans(points, 5, { numClusters: 4, seed: 9 });
    expect(b.assignments).toEqual(a.assignments);
    expect(b.centroids).toEqual(a.centroids);
    const few = kmeans(new Float32Array([0, 0, 1, 1]), 2, { numClusters: 5, seed: 0 });
    expect(few.numClusters).toBe(2);
    expect([...few.assignments].sort()).toEqual([0, 1]);
    expect(few.inertia).toBe(0);
    // identical points: one centre holds them all, inertia 0
    const same = kmeans(new Float32Array(12).fill(0.5), 3, { numClusters: 2, seed: 0 });
    expect(same.inertia).toBe(0);
    expect(kmeans(new Float32Array(0), 3, { numClusters: 2, seed: 0 }).numClusters).toBe(0);
  });

  it('hand-worked 1-D case: two groups, centres at their means', () => {
    // points 0, 1, 2 and 10, 11: centres 1 and 10.5, inertia (1 + 0 + 1) + (0.25 + 0.25) = 2.5
    const result = kmeans(new Float32Array([0, 10, 1, 11, 2]), 1, { numClusters: 2, seed: 4 });
    const low = result.assignments[0]!;
    expect([...result.assignments]).toEqual([low, 1 - low, low, 1 - low, low]);
    expect(result.centroids[low]).toBeCloseTo(1, 6);
    expect(result.centroids[1 - low]).toBeCloseTo(10.5, 6);
    expect(result.inertia).toBeCloseTo(2.5, 6);
  });

  it('rejects bad shapes with one line', () => {
    expect(() => kmeans(new Float32Array(5), 2, { numClusters: 1, seed: 0 })).toThrow('kmeans: 5 values are not rows of 2');
    expect(() => kmeans(new Float32Array(4), 2, { numClusters: 0, seed: 0 })).toThrow('kmeans: numClusters must be a positive integer, got 0');
  });
});
