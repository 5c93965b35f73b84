-- Room on each `repos` page for the next version of its rows. Every store batch updates the
-- state of each repo it touches (rev, head, counts, updated_at); that update changes no indexed
-- column in the common case (`did`, `status` and `next_retry_at` stay as they are for a repo
-- that stays active), so PostgreSQL can write it as a HOT update, in place on the same page and
-- without new index entries, but only if the page has free space. Packed full (the default
-- fillfactor, 100) nearly every update went to another page with an entry in each of the three
-- indexes, and the table and its indexes grew by a row version per repo per batch.
-- Existing pages keep their rows; pages written from now on keep 30% free.
ALTER TABLE repos SET (fillfactor = 70);
