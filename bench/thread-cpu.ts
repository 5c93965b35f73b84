/**
 * CPU time of this process's threads by name, from Linux's /proc (the benches' per-thread
 * figures: the consumer's own thread, its verify threads, V8's helpers).
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
