import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminQuery } from '../spec/support/databases';

/** Linux clock ticks per second (`getconf CLK_TCK`), the unit of /proc/<pid>/stat's CPU times. */
const CLOCK_TICKS_PER_S = 100;

/**
 * A reader of the CPU time (ms) the test PostgreSQL server has used so far, its backends included
 * (the postmaster's own time, that of the backends it has reaped, and that of its live children),
 * or undefined when the server does not run on this machine or /proc cannot be read. On a machine
 * whose cores the client and the server share, this says which side an open costs.
 */
export async function serverCpuReader(): Promise<(() => number) | undefined> {
  try {
    const [row] = await adminQuery<{ data_directory: string }>('SHOW data_directory');
    if (row === undefined) return undefined;
    const pid = Number(
      readFileSync(join(row.data_directory, 'postmaster.pid'), 'utf8').split('\n')[0],
    );
    const read = (): number => {
      // utime, stime, cutime, cstime: fields 14 to 17, after the command in parentheses.
      const times = (p: number, withChildren: boolean): number => {
        const fields = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
        const own = Number(fields[11]) + Number(fields[12]);
        return withChildren ? own + Number(fields[13]) + Number(fields[14]) : own;
      };
      let ticks = times(pid, true);
      const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
      for (const child of children === '' ? [] : children.split(' ')) {
        try {
          ticks += times(Number(child), true);
        } catch {
          // Exited since the list was read: its time is in the postmaster's reaped-children figure.
        }
      }
      return (ticks * 1000) / CLOCK_TICKS_PER_S;
    };
    read();
    return read;
  } catch {
    return undefined;
  }
}
