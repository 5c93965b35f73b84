/** A concurrency limit: at most `n` of the functions passed to `run` are running at once. */
export function limiter(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let running = 0;
  const queue: (() => void)[] = [];
  const next = () => {
    running--;
    queue.shift()?.();
  };
  return <T>(fn: () => Promise<T>) =>
    new Promise<T>((resolve, reject) => {
      const start = () => {
        running++;
        fn().then(resolve, reject).finally(next);
      };
      if (running < n) start();
      else queue.push(start);
    });
}
