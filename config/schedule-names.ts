/**
 * The names of repowalk's periodic jobs, with nothing else: the configuration (which ones are
 * disabled) validates against them without loading the Temporal client.
 */
export const SCHEDULE_NAMES = ['resync-sweep', 'gone-recheck', 'retention', 'gc', 'rotating-scrub', 'rotating-validate', 'stats', 'refresh'] as const;

export type ScheduleName = (typeof SCHEDULE_NAMES)[number];
