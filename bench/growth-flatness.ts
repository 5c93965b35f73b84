/**
 * How flat a cost curve is: a figure at the largest mirror of an axis divided by the same figure at
 * the smallest. For a rate (nodes/s) 1 is flat and below 1 is a cost growing faster than the
 * mirror; for a cost (CPU per node) it is the other way round. Issue 13's "within ±20 %" is
 * 0.8–1.2.
 */
export interface AxisPoint {
  /** The axis's size: records or repos in the mirror. */
  size: number;
  figures: Record<string, number | undefined>;
}

/** Largest ÷ smallest for each figure both ends have (rounded to 0.01); needs two sizes. */
export function flatness(points: AxisPoint[]): Record<string, number> {
  if (points.length < 2) return {};
  const sorted = [...points].sort((a, b) => a.size - b.size);
  const small = sorted[0]!.figures;
  const large = sorted[sorted.length - 1]!.figures;
  const out: Record<string, number> = {};
  for (const [k, lo] of Object.entries(small)) {
    const hi = large[k];
    if (lo === undefined || hi === undefined || !(lo > 0) || !Number.isFinite(hi)) continue;
    out[k] = Math.round((hi / lo) * 100) / 100;
  }
  return out;
}

/** Whether a ratio is within ±`tolerance` of 1 (issue 13: 0.2). */
export function withinFlat(ratio: number, tolerance = 0.2): boolean {
  return Math.abs(ratio - 1) <= tolerance + 1e-9;
}
