-- A repo found by its handle. XRPC reads take a DID or a handle in `repo` (`getRecord`,
-- `listRecords`, `describeRepo`, …, as `@atproto/api` clients send them), and the serve path
-- looks a handle up case-insensitively (serve/repos.ts, `findRepo`). Without an index that read
-- `repos` whole for every request by handle: 23 ms at 100,000 repos, growing with the mirror.
-- An expression index on `lower(handle)` answers it by one probe. It costs an index entry per
-- repo with a handle; a change of handle (an identity event, rare) is the only update of `repos`
-- it keeps from being HOT, so live sync's per-commit updates of a repo's state stay in place
-- (migration 0008).
CREATE INDEX repos_handle_lower ON repos (lower(handle)) WHERE handle IS NOT NULL;
