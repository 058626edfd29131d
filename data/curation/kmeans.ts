/**
 * k-means clustering (Lloyd 1982) with k-means++ seeding (Arthur & Vassilvitskii 2007), seeded
 * and deterministic, on points stored row-major in one Float32Array ([N, D]).
 *
 * 1) k-means++: the first centre is a uniformly drawn point; each next one is a point drawn with
 *    probability proportional to D(x)², its squared distance to the nearest centre so far.
 * 2) Lloyd: assign every point to its nearest centre (squared Euclidean; ties to the lower
 *    index), move each centre to the mean of its points; an emptied cluster is re-seeded with the
 *    point farthest from its own centre. Stop when no assignment changes, when no centre moves by
 *    more than `tolerance` (Euclidean), or after `maxIterations`.
 *
 * Plain loops in float64 arithmetic: for the sizes curation clusters (10⁴ rows × 10² dims × 10²
 * clusters) one iteration is ~10⁸ multiply-adds, well under a second, with exact reproducibility.
 */
import { Rng } from '../../src/util/rng.js';

export interface KMeansOptions {
  /** k; more than the number of points is reduced to it. */
  numClusters: number;
  /** Seed of the k-means++ draws. */
  seed: number;
  /** Most Lloyd iterations. Default 50. */
  maxIterations?: number;
  /** Stop once no centre moves farther than this (Euclidean). Default 1e-4. */
  tolerance?: number;
}

export interface KMeansResult {
  /** Centres, row-major [k, D]. */
  centroids: Float32Array;
  /** Cluster of each point [N]. */
  assignments: Int32Array;
  /** k actually used: min(numClusters, N). */
  numClusters: number;
  /** Lloyd iterations run. */
  numIterations: number;
  /** Whether it stopped before maxIterations (stable assignments or centres). */
  converged: boolean;
  /** Sum of squared distances of points to their centres. */
  inertia: number;
}

/** Squared Euclidean distance between row i of `a` and row j of `b`, both with `dim` columns. */
function squaredDistance(a: Float32Array, i: number, b: Float32Array, j: number, dim: number): number {
  let sum = 0;
  const offsetA = i * dim;
  const offsetB = j * dim;
  for (let d = 0; d < dim; d++) {
    const diff = a[offsetA + d]! - b[offsetB + d]!;
    sum += diff * diff;
  }
  return sum;
}

/** k-means++ seeding: k centres drawn from the points (module doc, step 1). */
function seedCentroids(points: Float32Array, numPoints: number, dim: number, numClusters: number, rng: Rng): Float32Array {
  const centroids = new Float32Array(numClusters * dim);
  const copyPoint = (point: number, cluster: number) => centroids.set(points.subarray(point * dim, (point + 1) * dim), cluster * dim);
  copyPoint(rng.nextInt(numPoints), 0);
  const nearest = new Float64Array(numPoints); // D(x)² to the nearest centre so far
  for (let p = 0; p < numPoints; p++) nearest[p] = squaredDistance(points, p, centroids, 0, dim);
  for (let c = 1; c < numClusters; c++) {
    let total = 0;
    for (let p = 0; p < numPoints; p++) total += nearest[p]!;
    let chosen = numPoints - 1;
    if (total > 0) {
      let target = rng.next() * total;
      for (let p = 0; p < numPoints; p++) {
        target -= nearest[p]!;
        if (target < 0) {
          chosen = p;
          break;
        }
      }
    } else {
      chosen = rng.nextInt(numPoints); // every point sits on a centre: any choice is as good
    }
    copyPoint(chosen, c);
    for (let p = 0; p < numPoints; p++) nearest[p] = Math.min(nearest[p]!, squaredDistance(points, p, centroids, c, dim));
  }
  return centroids;
}

/** Clusters `points` ([numPoints, dim] row-major) into k groups (module doc). */
export function kmeans(points: Float32Array, dim: number, options: KMeansOptions): KMeansResult {
  const { seed, maxIterations = 50, tolerance = 1e-4 } = options;
  if (!Number.isInteger(dim) || dim < 1) throw new Error(`kmeans: dim must be a positive integer, got ${dim}`);
  if (points.length % dim !== 0) throw new Error(`kmeans: ${points.length} values are not rows of ${dim}`);
  if (!Number.isInteger(options.numClusters) || options.numClusters < 1) throw new Error(`kmeans: numClusters must be a positive integer, got ${options.numClusters}`);
  if (!Number.isInteger(maxIterations) || maxIterations < 1) throw new Error(`kmeans: maxIterations must be a positive integer, got ${maxIterations}`);
  const numPoints = points.length / dim;
  const numClusters = Math.min(options.numClusters, numPoints);
  const assignments = new Int32Array(numPoints).fill(-1);
  if (numPoints === 0) return { centroids: new Float32Array(0), assignments, numClusters: 0, numIterations: 0, converged: true, inertia: 0 };

  const centroids = seedCentroids(points, numPoints, dim, numClusters, new Rng(seed));
  const distances = new Float64Array(numPoints);
  let numIterations = 0;
  let converged = false;
  while (numIterations < maxIterations) {
    numIterations++;
    // 1) assignment
    const numChanged = assignNearest(points, centroids, dim, assignments, distances);
    if (numChanged === 0) {
      converged = true;
      break;
    }
    // 2) update: centres to the means of their points
    const sums = new Float64Array(numClusters * dim);
    const counts = new Int32Array(numClusters);
    for (let p = 0; p < numPoints; p++) {
      const c = assignments[p]!;
      counts[c]!++;
      for (let d = 0; d < dim; d++) sums[c * dim + d] += points[p * dim + d]!;
    }
    let largestMove = 0;
    for (let c = 0; c < numClusters; c++) {
      const previous = centroids.slice(c * dim, (c + 1) * dim);
      if (counts[c] === 0) {
        // an emptied cluster takes the point farthest from its centre, which leaves that cluster
        let farthest = 0;
        for (let p = 1; p < numPoints; p++) if (distances[p]! > distances[farthest]!) farthest = p;
        centroids.set(points.subarray(farthest * dim, (farthest + 1) * dim), c * dim);
        distances[farthest] = 0;
      } else {
        for (let d = 0; d < dim; d++) centroids[c * dim + d] = sums[c * dim + d]! / counts[c]!;
      }
      largestMove = Math.max(largestMove, Math.sqrt(squaredDistance(centroids, c, previous, 0, dim)));
    }
    if (largestMove <= tolerance) {
      converged = true;
      break;
    }
  }
  // Final assignment to the final centres, so assignments and centroids agree.
  assignNearest(points, centroids, dim, assignments, distances);
  let inertia = 0;
  for (let p = 0; p < numPoints; p++) inertia += distances[p]!;
  return { centroids, assignments, numClusters, numIterations, converged, inertia };
}

/**
 * Assigns every point to its nearest centre (squared Euclidean; ties to the lower index), writing
 * `assignments` and the squared `distances`; returns how many assignments changed.
 */
function assignNearest(points: Float32Array, centroids: Float32Array, dim: number, assignments: Int32Array, distances: Float64Array): number {
  const numPoints = points.length / dim;
  const numClusters = centroids.length / dim;
  let numChanged = 0;
  for (let p = 0; p < numPoints; p++) {
    let best = 0;
    let bestDistance = Infinity;
    for (let c = 0; c < numClusters; c++) {
      const distance = squaredDistance(points, p, centroids, c, dim);
      if (distance < bestDistance) {
        bestDistance = distance;
        best = c;
      }
    }
    if (assignments[p] !== best) numChanged++;
    assignments[p] = best;
    distances[p] = bestDistance;
  }
  return numChanged;
}

/** Index of the centre nearest to each point (squared Euclidean; ties to the lower index). */
export function nearestCentroid(points: Float32Array, centroids: Float32Array, dim: number): Int32Array {
  const assignments = new Int32Array(points.length / dim).fill(-1);
  assignNearest(points, centroids, dim, assignments, new Float64Array(points.length / dim));
  return assignments;
}
