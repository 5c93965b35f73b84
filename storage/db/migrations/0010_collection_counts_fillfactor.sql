-- Room on each `collection_counts` page for the next version of its rows. A store batch moves
-- the count of each collection a repo's commits touched (a live-sync batch: about one row per
-- repo), and `count` is in no index, so PostgreSQL can write that as a HOT update, in place on
-- the same page and without a new entry in the primary key, but only if the page has room.
-- Packed full (the default fillfactor, 100) nearly every update went to another page with a new
-- key entry: on the live-sync bench (2,000 repos x 100 commits) 3 % of 198,000 updates were HOT
-- and the table and its key grew to 18 MB for 2,000 rows. Existing pages keep their rows; pages
-- written from now on keep 30 % free.
ALTER TABLE collection_counts SET (fillfactor = 70);
