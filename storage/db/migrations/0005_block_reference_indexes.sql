-- Who references a block: the validate walk's refcount check counts, for each block it visits,
-- the `records` rows and `events` that name it (storage/validate-queries.ts). Without an index
-- on their `cid` every such count scans both tables, so a walk's cost per repo grew with the
-- size of the mirror (issue 13: 2,000 small repos walked at 12,000 nodes/s, the batched
-- comparison of roots finishing together spending ~35 ms a statement in two sequential scans of
-- 20,000 rows each, and at a full mirror's billions of rows it never finishes).
--
-- Hash indexes: the only question asked is equality, and a hash index stores a 4-byte hash
-- code per row instead of the 36-byte CID, so it is half the size of a B-tree on the same
-- column and cheaper for the importer to maintain (200,000 rows with random CIDs: 7.3 MB
-- against 15 MB). `events.cid` is NULL for deletes and non-record events; a hash index does not
-- hold NULLs.
CREATE INDEX records_cid ON records USING hash (cid);
CREATE INDEX events_cid ON events USING hash (cid);
