-- What a repo head's getRepo CAR is made of (issue 10), so that a server that has not sent the
-- head before answers from one row and a few pack reads instead of a tree walk: the CAR header
-- and commit block as bytes, then ranges of pack bytes (blocks framed as a CAR frames them),
-- each with the CRC-32 of its bytes, checked when read (storage/car-plans.ts). Written by a
-- first import that stores a repo alone in a pack of its own, in its transaction, and by serve
-- the first time it walks any other head; one row per repo, replaced by the next one written.
--
-- A plan is used only for the head it names (`head_cid` = the repo's current head), and only
-- while every pack it reads still has its `packs` row: `repo_car_plan_packs` names them, and a
-- pack row deleted (GC's sweep, in the transaction that deletes the pack's block rows and
-- before the object is removed from the blobstore) takes its link rows with it, so the plan
-- reads as incomplete and is not used.
CREATE TABLE repo_car_plans (
  did        text PRIMARY KEY REFERENCES repos (did) ON DELETE CASCADE,
  head_cid   bytea NOT NULL,
  pack_count integer NOT NULL CHECK (pack_count >= 0),
  -- The pieces, in CAR order (serve/car-plan-store.ts encodes them).
  pieces     bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE repo_car_plan_packs (
  did     text NOT NULL REFERENCES repo_car_plans (did) ON DELETE CASCADE,
  ord     integer NOT NULL CHECK (ord >= 0),
  pack_id bigint NOT NULL REFERENCES packs (id) ON DELETE CASCADE,
  PRIMARY KEY (did, ord)
);

-- GC deletes packs by id: the cascade finds the plans reading them through this.
CREATE INDEX repo_car_plan_packs_pack ON repo_car_plan_packs (pack_id);
