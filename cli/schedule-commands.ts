/**
 * `repowalk schedule apply [--dry-run] | list | trigger <name>`: thin wiring from the command
 * line to `schedules/schedules.ts`.
 */
import { parseArgs } from 'node:util';
import type { Config } from '../config/options.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import { UsageError } from './usage.ts';
import { connectClient } from '../client/connection.ts';
import { SCHEDULE_NAMES, applySchedules, listSchedules, scheduleDefinitions, type ApplyReport, type ScheduleListing } from '../schedules/schedules.ts';

export function formatApplyReport(r: ApplyReport, dryRun = false): string {
  const verb = (done: string, would: string) => (dryRun ? would : done);
  const lines = [
    ...r.created.map((id) => `${verb('created', 'would create')} ${id}`),
    ...r.updated.map((u) => `${verb('updated', 'would update')} ${u.scheduleId}: ${u.changes.join('; ')}`),
    ...r.deleted.map((id) => `${verb('deleted', 'would delete')} ${id} (disabled by REPOWALK_SCHEDULES_DISABLED)`),
    ...r.unchanged.map((id) => `unchanged ${id}`),
  ];
  return lines.join('\n');
}

export function formatListing(list: ScheduleListing[]): string {
  if (list.length === 0) return 'no schedules (run `repowalk schedule apply`)';
  return list
    .map((s) => {
      const last = s.recentRuns[s.recentRuns.length - 1];
      return `${s.scheduleId.padEnd(28)} ${String(s.workflowType ?? '?').padEnd(13)} every ${s.everySeconds.map((e) => `${e} s`).join(', ').padEnd(9)} ${s.paused ? `paused${s.note ? ` (${s.note})` : ''}` : 'active'}${last ? `, last ${last.workflowId} at ${last.at}` : ''}${s.nextRunAt && !s.paused ? `, next at ${s.nextRunAt}` : ''}`;
    })
    .join('\n');
}

export async function scheduleCommand(config: Config, args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  // Arguments are checked before any server is contacted.
  if (sub !== 'apply' && sub !== 'list' && sub !== 'trigger') throw new UsageError(`unknown schedule command ${JSON.stringify(sub ?? '')}; expected apply, list or trigger`);
  const { values, positionals } = parseArgs({ args: rest, options: { 'dry-run': { type: 'boolean' } }, allowPositionals: true, strict: true });
  const name = positionals[0];
  if (sub === 'trigger' && !(name && (SCHEDULE_NAMES as readonly string[]).includes(name))) throw new UsageError(`schedule trigger takes one of ${SCHEDULE_NAMES.join(', ')}`);
  if (sub !== 'trigger' && positionals.length > 0) throw new UsageError(`schedule ${sub} takes no arguments`);
  const client = await connectClient(resolveEndpoints(config, { database: false }));
  try {
    switch (sub) {
      case 'apply': {
        const dryRun = values['dry-run'] ?? false;
        console.log(formatApplyReport(await applySchedules(client, config, { dryRun }), dryRun));
        return 0;
      }
      case 'list':
        console.log(formatListing(await listSchedules(client, { prefix: `${config.temporal.taskQueue}-` })));
        return 0;
      case 'trigger': {
        const d = scheduleDefinitions(config).find((s) => s.name === name)!;
        await client.schedule.getHandle(d.scheduleId).trigger();
        console.log(`triggered ${d.scheduleId} (${d.workflowType} on ${d.taskQueue})`);
        return 0;
      }
    }
  } finally {
    await client.connection.close();
  }
}
