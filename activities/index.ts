/** Every activity, built over the stores a worker opened. */
import { pingActivities, type StoreDeps } from './ping.ts';

export type { StoreDeps };

export function createActivities(deps: StoreDeps) {
  return {
    ...pingActivities(deps),
  };
}
