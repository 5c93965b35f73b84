/**
 * Values that are often ready at once. The walk's steps mostly find what they need in memory
 * (a location read in bulk, a cached pack); returning the value rather than a promise spares a
 * promise, a microtask and an `await` per node, which at 100,000 nodes a second is much of the
 * budget.
 */
export type MaybePromise<T> = T | Promise<T>;

export function isPromise<T>(v: MaybePromise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}

/** `f(v)`, at once when `v` is a value, after it when a promise. (Not named `then`: a module exporting `then` is a thenable to `import()`.) */
export function andThen<T, U>(v: MaybePromise<T>, f: (t: T) => MaybePromise<U>): MaybePromise<U> {
  return isPromise(v) ? v.then(f) : f(v);
}
