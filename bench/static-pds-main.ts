// `node bench/static-pds-main.ts --repos N --records M [--key-per-repo]`: the static PDS (atproto/testing/static-pds.ts)
// in a process of its own, so that a bench counts its CPU apart from the worker's. Prints its URL
// as one JSON line once it listens; exits when stdin closes (its parent went away).
import { parseArgs } from 'node:util';
import { serveRepos, smallRepos } from '../atproto/testing/static-pds.ts';

const { values } = parseArgs({ options: { repos: { type: 'string', default: '2000' }, records: { type: 'string', default: '10' }, 'key-per-repo': { type: 'boolean', default: false } } });
const repos = await smallRepos(Number(values.repos), Number(values.records), (l) => console.error(l), { keyPerRepo: values['key-per-repo'] });
const { url } = await serveRepos(repos);
console.log(JSON.stringify({ url, repos: repos.length }));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
