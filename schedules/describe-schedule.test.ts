/**
 * `describeSchedule` asks again when the server's query of the schedule's workflow ran out its
 * deadline, and only then. The client here injects the faults; the real server is in
 * schedules.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { ScheduleNotFoundError, ServiceError, type Client, type ScheduleDescription } from '@temporalio/client';
import { describeSchedule } from './schedules.ts';

/** What the SDK throws when the server answers DEADLINE_EXCEEDED: a ServiceError over the gRPC error. */
function deadline(): ServiceError {
  const grpc = Object.assign(new Error('4 DEADLINE_EXCEEDED: context deadline exceeded'), { code: 4, details: 'context deadline exceeded', metadata: {} });
  return new ServiceError('Failed to describe schedule', { cause: grpc });
}

function clientAnswering(answers: (Error | 'ok')[]): { client: Client; asked: () => number } {
  let asked = 0;
  const description = { scheduleId: 's' } as unknown as ScheduleDescription;
  const client = {
    schedule: {
      getHandle: () => ({
        describe: async () => {
          const a = answers[Math.min(asked++, answers.length - 1)]!;
          if (a === 'ok') return description;
          throw a;
        },
      }),
    },
  } as unknown as Client;
  return { client, asked: () => asked };
}

describe('describeSchedule', () => {
  it('asks again after DEADLINE_EXCEEDED, and returns the answer that came', async () => {
    const { client, asked } = clientAnswering([deadline(), deadline(), 'ok']);
    expect(await describeSchedule(client, 's')).toEqual({ scheduleId: 's' });
    expect(asked()).toBe(3);
  });

  it('gives up after three deadlines with the last error', async () => {
    const { client, asked } = clientAnswering([deadline()]);
    await expect(describeSchedule(client, 's')).rejects.toThrow(/Failed to describe schedule/);
    expect(asked()).toBe(3);
  });

  it('does not ask again for any other error: not found is the caller\'s at once', async () => {
    const { client, asked } = clientAnswering([new ScheduleNotFoundError('not found', 's'), 'ok']);
    await expect(describeSchedule(client, 's')).rejects.toBeInstanceOf(ScheduleNotFoundError);
    expect(asked()).toBe(1);
  });
});
