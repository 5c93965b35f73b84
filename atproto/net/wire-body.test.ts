import { describe, expect, it } from 'vitest';
import { WireBody } from './wire-body.ts';

function flow() {
  const calls: string[] = [];
  return { calls, pause: () => calls.push('pause'), resume: () => calls.push('resume') };
}

describe('WireBody', () => {
  it('hands chunks over in order, then null at the end; undefined while none has come', () => {
    const b = new WireBody(flow());
    expect(b.read()).toBeUndefined();
    b.push(Buffer.from('a'));
    b.push(Buffer.from('b'));
    expect(String(b.read())).toBe('a');
    expect(String(b.read())).toBe('b');
    expect(b.read()).toBeUndefined();
    b.end();
    expect(b.read()).toBeNull();
    expect(b.destroyed).toBe(true);
  });

  it('pauses the source past 64 KiB unread and resumes it once half is read', () => {
    const f = flow();
    const b = new WireBody(f);
    for (let i = 0; i < 5; i++) b.push(new Uint8Array(16 * 1024));
    expect(f.calls).toEqual(['pause']);
    b.read();
    expect(f.calls).toEqual(['pause']); // 64 KiB still unread
    b.read();
    b.read();
    expect(f.calls).toEqual(['pause', 'resume']);
  });

  it('wakes a waiting reader on a chunk, the end, or a failure', async () => {
    const b = new WireBody(flow());
    const waited = b.wait();
    setTimeout(() => b.push(Buffer.from('x')), 5);
    await waited;
    expect(String(b.read())).toBe('x');
    const ending = b.wait();
    b.end();
    await ending;
    expect(b.read()).toBeNull();
  });

  it('a failure drops what is buffered and is thrown to the reader; after the end has been read it is a no-op', async () => {
    const b = new WireBody(flow());
    b.push(Buffer.from('unread'));
    const reason = new Error('reset');
    b.destroy(reason);
    expect(() => b.read()).toThrow(reason);
    await expect(b.wait()).resolves.toBeUndefined();
    const done = new WireBody(flow());
    done.push(Buffer.from('x'));
    done.end();
    done.read();
    expect(done.read()).toBeNull();
    done.destroy(reason);
    expect(done.read()).toBeNull();
  });

  it('iterates asynchronously', async () => {
    const b = new WireBody(flow());
    setTimeout(() => {
      b.push(Buffer.from('he'));
      setTimeout(() => {
        b.push(Buffer.from('llo'));
        b.end();
      }, 5);
    }, 5);
    let out = '';
    for await (const c of b) out += String(c);
    expect(out).toBe('hello');
  });
});
