/**
 * CPU time of this process's threads by name, and of other processes by pid, from Linux's /proc
 * (the benches' per-thread figures: the consumer's own thread, its verify threads, V8's helpers;
 * and PostgreSQL's backends, the Temporal server, the static PDS).
 */
import { readdirSync, readFileSync } from 'node:fs';

/** CPU milliseconds of this process's threads, summed by thread name (Linux /proc; empty elsewhere). */
export function threadsCpu(): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[] = [];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).replace(/[0-9]+$/, '').trim();
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(name, (out.get(name) ?? 0) + (Number(f[11]) + Number(f[12])) * 10);
    } catch {
      // the thread ended
    }
  }
  return out;
}

/**
 * CPU milliseconds (user + system) that `pids` have used, from /proc. A pid that cannot be read
 * (gone, or not this machine's) counts 0, or makes the answer null when `strict`.
 */
export function pidsCpuMs(pids: readonly number[], strict = false): number | null {
  let ms = 0;
  for (const pid of pids) {
    try {
      // Fields after the command name: utime and stime are the 12th and 13th, in clock ticks (100 Hz).
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ms += (Number(f[11]) + Number(f[12])) * 10;
    } catch {
      if (strict) return null;
    }
  }
  return ms;
}
