/** Every workflow repowalk registers; the worker bundles this file. */
export { ping } from './ping.ts';
