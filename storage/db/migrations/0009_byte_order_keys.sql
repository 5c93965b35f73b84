-- Byte order ("C" collation) for the text keys of the tables every store batch writes: repos,
-- records, collection_counts and events.
--
-- Until now they compared under the database's default collation. Where that is a language's
-- (en_US.UTF-8, the usual default of a PostgreSQL server), every B-tree comparison of a DID, a
-- collection or an rkey goes through the locale's collation routine, and the importer makes
-- millions of them (records' primary key, events' (did, id) index, collection_counts' key, the
-- repos lookups): on a database whose default is ICU en-US, inserting 100,000 rows cost 15-25 %
-- more PostgreSQL CPU in `records` and in `events` than with these columns in byte order.
--
-- Byte order is also what atproto means: a repo's MST orders its keys by their bytes, and
-- listRecords pages by rkey in that order. Under a language collation `ORDER BY rkey` and
-- `rkey > $cursor` (serve/repos.ts) follow the language's rules instead (case folded, punctuation
-- ignored at first), which is not the order the MST walk and atproto clients expect. DIDs,
-- NSIDs and rkeys are ASCII by their syntax, so byte order is also JavaScript's string order.
--
-- Parameters and literals compared with these columns take the column's collation (a column's
-- collation wins over the default one), so queries keep using the indexes and need no change.
-- Changing only the collation of a text column does not rewrite the table; the indexes that
-- include the column are rebuilt.
--
-- `repo_car_plans.did` and `repo_car_plan_packs.did` reference `repos (did)` and change with it.
ALTER TABLE repo_car_plan_packs ALTER COLUMN did TYPE text COLLATE "C";
ALTER TABLE repo_car_plans ALTER COLUMN did TYPE text COLLATE "C";
ALTER TABLE repos ALTER COLUMN did TYPE text COLLATE "C";

ALTER TABLE records
  ALTER COLUMN did TYPE text COLLATE "C",
  ALTER COLUMN collection TYPE text COLLATE "C",
  ALTER COLUMN rkey TYPE text COLLATE "C";

ALTER TABLE collection_counts
  ALTER COLUMN did TYPE text COLLATE "C",
  ALTER COLUMN collection TYPE text COLLATE "C";

ALTER TABLE events
  ALTER COLUMN did TYPE text COLLATE "C",
  ALTER COLUMN collection TYPE text COLLATE "C",
  ALTER COLUMN rkey TYPE text COLLATE "C";

-- Room on each `blocks` page for a new version of some of its rows. A block's refcount changes
-- after it was indexed (a repo's previous commit loses its head reference at the next commit; an
-- updated or deleted record loses its row and gains an event), and `refcount` is in no index, so
-- PostgreSQL can write that change as a HOT update, on the same page and without new entries in
-- `blocks_pkey` and `blocks_pack_id`, but only if the page has room. Full pages (the default,
-- 100) made every such update a new row version on another page with an entry in both indexes.
-- Measured on 600,000 blocks and then 60 batches of 6,000 new blocks, each batch taking one
-- reference from the previous batch's commit blocks: 0 % of the updates HOT at 100, 62 % at 90,
-- and PostgreSQL CPU for the updates 18-26 % lower, for a heap 6 % larger. Existing pages keep
-- their rows; pages written from now on keep 10 % free.
ALTER TABLE blocks SET (fillfactor = 90);
