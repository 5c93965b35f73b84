// Moved to test/mirror.ts; kept until graph/walks/validate.test.ts (being rewritten on another branch) imports it from there.
export { buildMirror, testDids, type MirrorRepoSpec } from '../test/mirror.ts';
