/**
 * One workflow thread for every job's Temporal Worker in a process. The SDK gives each Worker
 * its own workflow thread (a V8 isolate with the workflow bundle loaded, ~45 MB resident at
 * rest); a process running four jobs held four copies of the same bundle. With `reuseV8Context`
 * (the SDK's default) a thread runs every workflow in one reused context, whichever Worker
 * activates it, so one thread serves them all: workflows of different task queues have
 * different run ids, and each Worker keeps its own cache and sticky queue.
 *
 * The SDK's extension points are `Worker.getOrCreateBundle` and `Worker.createWorkflowCreator`
 * (protected static): the subclass below reads the bundle once for the Workers created together
 * (the SDK reads it, parses its source map and runs it in a throwaway context of the main isolate
 * per Worker), hands every Worker of a `SharedWorkflows` the same creator and destroys it when
 * the last Worker that took it is done. The thread knows the activity names of every job (they
 * matter only to local activities, which the workflows do not use).
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { Worker, type CompiledWorkerOptions, type Logger, type WorkerOptions } from '@temporalio/worker';
import type { WorkflowCreator } from '@temporalio/worker/lib/workflow/interface.js';
import type { WorkflowBundleWithSourceMapAndFilename } from '@temporalio/worker/lib/workflow/workflow-worker-thread/input.js';

type CreatorArgs = [bundle: unknown, compiled: CompiledWorkerOptions, logger: Logger];

const INLINE_MAP = '//# sourceMappingURL=data:';

/**
 * The bundle at the absolute `codePath` as the SDK's `getOrCreateBundle` gives it (its text, its
 * inline source map parsed, its file name), without the SDK's extra step for debuggers: compiling
 * and running the whole bundle in a throwaway context of the main isolate, kept 10 s, so that
 * breakpoints bind. Workflows run in the workflow thread, which compiles the bundle itself; the
 * main isolate's copy cost a compile of 1.6 MB of script and the heap and malloc'd memory it left
 * behind at every start.
 */
async function readBundle(codePath: string): Promise<WorkflowBundleWithSourceMapAndFilename> {
  const code = await readFile(codePath, 'utf8');
  const at = code.lastIndexOf(INLINE_MAP);
  const data = at < 0 ? -1 : code.indexOf('base64,', at);
  if (data < 0) throw new TypeError(`the workflow bundle ${codePath} has no inline source map`);
  const sourceMap = JSON.parse(Buffer.from(code.slice(data + 'base64,'.length).trimEnd(), 'base64').toString()) as WorkflowBundleWithSourceMapAndFilename['sourceMap'];
  return { code, sourceMap, filename: codePath };
}

/** A process's shared workflow thread: create Workers through `create`. */
export class SharedWorkflows {
  #creator: Promise<WorkflowCreator> | undefined;
  #users = 0;
  readonly #activityNames = new Set<string>();
  readonly #WorkerClass: typeof Worker;
  /**
   * The bundle each Worker would read, by its code path (or code), read once — and kept only
   * while Workers are being created: the workflow thread has its own copy, and this one (the
   * bundle's text and its parsed source map, ~2 MB) would otherwise stay for the process's life.
   */
  readonly #bundles = new Map<unknown, Promise<unknown>>();
  #creating = 0;

  /** `activityNames`: every activity any Worker of this process registers. */
  constructor(activityNames: Iterable<string>) {
    for (const n of activityNames) this.#activityNames.add(n);
    const shared = this;
    this.#WorkerClass = class SharedWorkflowsWorker extends Worker {
      protected static override getOrCreateBundle(...args: Parameters<typeof Worker.getOrCreateBundle>): ReturnType<typeof Worker.getOrCreateBundle> {
        // Read, parsed (the source map too) and pre-run once, not once per Worker.
        const [compiled] = args;
        const key = compiled.workflowBundle && 'codePath' in compiled.workflowBundle ? compiled.workflowBundle.codePath : compiled.workflowBundle;
        let bundle = shared.#bundles.get(key) as ReturnType<typeof Worker.getOrCreateBundle> | undefined;
        if (!bundle) {
          const path = compiled.workflowBundle && 'codePath' in compiled.workflowBundle ? compiled.workflowBundle.codePath : undefined;
          bundle = path !== undefined && isAbsolute(path) && !compiled.debugMode ? readBundle(path) : super.getOrCreateBundle(...args);
          shared.#bundles.set(key, bundle);
        }
        return bundle;
      }

      protected static override createWorkflowCreator(...args: Parameters<typeof Worker.createWorkflowCreator>): Promise<WorkflowCreator> {
        return shared.#take(args, (a) => super.createWorkflowCreator(...(a as typeof args)));
      }
    };
  }

  /** `Worker.create`, with the workflow thread shared. */
  async create(options: WorkerOptions): Promise<Worker> {
    this.#creating++;
    try {
      return await this.#WorkerClass.create(options);
    } finally {
      if (--this.#creating === 0) this.#bundles.clear();
    }
  }

  async #take(args: CreatorArgs, make: (args: CreatorArgs) => Promise<WorkflowCreator>): Promise<WorkflowCreator> {
    if (!this.#creator) {
      const [bundle, compiled, logger] = args;
      // The first Worker's options, with every job's activity names: the thread is shared.
      const activities = new Map([...this.#activityNames].map((n) => [n, compiled.activities.get(n) ?? (async () => undefined)]));
      const creating = make([bundle, { ...compiled, activities }, logger]);
      this.#creator = creating;
      creating.catch(() => {
        if (this.#creator === creating) this.#creator = undefined;
      });
    }
    const creator = await this.#creator;
    this.#users++;
    let released = false;
    return {
      createWorkflow: (opts) => creator.createWorkflow(opts),
      destroy: async () => {
        if (released) return;
        released = true;
        if (--this.#users > 0) return;
        this.#creator = undefined;
        await creator.destroy();
      },
    };
  }
}
