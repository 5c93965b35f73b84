-- repowalk's core schema: repos, the record index, packs and the block index, the event log,
-- blobs, the blobstore heal queue, walk findings and job state.
--
-- Conventions:
--   * CIDs of blocks are stored as bytea holding the raw binary CID (the bytes a CAR carries,
--     `Cid.bytes` in @atcute/cid: 0x01 <codec> 0x12 0x20 <digest>), not the base32 string:
--     36 bytes instead of 59 characters, on the largest tables.
--   * Enumerations are text with CHECK constraints rather than Postgres enum types: a later
--     migration can widen a CHECK in one statement inside a transaction, and the values read
--     back as plain strings.
--   * The high-volume tables (records, collection_counts, events) carry no foreign key to repos:
--     a row-level RI check per inserted row would cost bulk imports a large share of their
--     throughput, and a repo's rows are removed by the importer together with their refcount
--     changes, never by a cascade that would skip them. The validate walk checks consistency.
--   * Every timestamp is timestamptz.

-- One row per repository we mirror (or tried to).
CREATE TABLE repos (
  did              text PRIMARY KEY,
  status           text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'active', 'gone', 'deleted', 'error', 'dropped')),
  -- Why a repo is gone: the PDS answered RepoDeactivated, RepoTakendown or RepoSuspended.
  gone_status      text CHECK (gone_status IN ('deactivated', 'takendown', 'suspended')),
  rev              text,
  head_cid         bytea,
  data_cid         bytea,
  pds              text,
  handle           text,
  -- The atproto signing key from the DID document, as a did:key / multibase public key.
  -- Only ever a public key: this row is readable by anyone who can read the mirror.
  signing_key      text,
  -- Why the last attempt failed, while the repo waits in resync; NULL when it does not.
  resync_kind      text CHECK (resync_kind IN ('rate-limited', 'transport', 'error')),
  resync_count     integer NOT NULL DEFAULT 0 CHECK (resync_count >= 0),
  -- When the resync sweep (or the gone re-check) should try the repo again.
  next_retry_at    timestamptz,
  last_error       text,
  records_count    bigint NOT NULL DEFAULT 0 CHECK (records_count >= 0),
  blocks_count     bigint NOT NULL DEFAULT 0 CHECK (blocks_count >= 0),
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  last_imported_at timestamptz,
  -- A gone repo always says why, and only a gone repo does; the validate walk relies on it.
  CONSTRAINT repos_gone_status_iff_gone CHECK ((status = 'gone') = (gone_status IS NOT NULL)),
  -- A head and its data root are stored together, with the rev they belong to.
  CONSTRAINT repos_head_complete CHECK (
    (head_cid IS NULL AND data_cid IS NULL) OR (head_cid IS NOT NULL AND data_cid IS NOT NULL AND rev IS NOT NULL)
  )
);

-- The resync sweep asks "whose retry time has passed"; most repos have none, so the index is
-- partial and stays small.
CREATE INDEX repos_next_retry_at ON repos (next_retry_at) WHERE next_retry_at IS NOT NULL;
CREATE INDEX repos_status ON repos (status);

-- The record index: the leaves of each repo's MST at its stored head.
CREATE TABLE records (
  did        text NOT NULL,
  collection text NOT NULL,
  rkey       text NOT NULL,
  cid        bytea NOT NULL,
  PRIMARY KEY (did, collection, rkey)
);

-- Per-repo, per-collection record counts, kept by the importer in the same transaction as the
-- records, so that stats and signal-collection checks do not count the record index.
CREATE TABLE collection_counts (
  did        text NOT NULL,
  collection text NOT NULL,
  count      bigint NOT NULL CHECK (count >= 0),
  PRIMARY KEY (did, collection)
);

-- One row per pack: a CARv1 object in the blobstore under a content-derived key
-- (packs/<aa>/<sha256>.car). How much of a pack is still live is computed from blocks when GC
-- needs it, rather than kept here, so that refcount changes never contend on a pack row.
CREATE TABLE packs (
  id          bigserial PRIMARY KEY,
  key         text NOT NULL UNIQUE,
  size_bytes  bigint NOT NULL CHECK (size_bytes > 0),
  block_count integer NOT NULL CHECK (block_count >= 0),
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- The block index: where each block's bytes are (pack, offset and length of the block data
-- inside the pack, so that one ranged get returns exactly the block). A block that several
-- packs hold is indexed once, in the first pack that stored it; later copies are garbage.
CREATE TABLE blocks (
  cid         bytea PRIMARY KEY,
  -- Not a foreign key: Postgres checks one with a locking parent lookup per inserted row, and
  -- every import indexes every block it adds (a 200,000-block pack indexed in 2.7 s with the
  -- key, 1.4 s without). GC deletes a pack's index rows before the pack row, in one
  -- transaction, and the validate walk checks that every pack_id names a pack.
  pack_id     bigint NOT NULL,
  byte_offset bigint NOT NULL CHECK (byte_offset >= 0),
  byte_length integer NOT NULL CHECK (byte_length >= 0),
  -- References to this block that exist in stored state (kept by the importer).
  refcount    bigint NOT NULL DEFAULT 0 CHECK (refcount >= 0),
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX blocks_pack_id ON blocks (pack_id);

-- The event log: what changed in each repo, from backfill diffs or the live firehose.
CREATE TABLE events (
  id         bigserial PRIMARY KEY,
  did        text NOT NULL,
  kind       text NOT NULL CHECK (kind IN ('create', 'update', 'delete', 'account', 'identity')),
  collection text,
  rkey       text,
  -- The record's CID after the change (create, update) and before it (update, delete).
  cid        bytea,
  prev_cid   bytea,
  rev        text,
  origin     text NOT NULL CHECK (origin IN ('backfill', 'live')),
  detail     jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  -- Set in ephemeral mode: the retention job deletes the event after this time.
  expires_at timestamptz,
  CONSTRAINT events_record_path CHECK (
    kind IN ('account', 'identity') OR (collection IS NOT NULL AND rkey IS NOT NULL)
  ),
  CONSTRAINT events_record_cid CHECK (
    CASE kind
      WHEN 'create' THEN cid IS NOT NULL
      WHEN 'update' THEN cid IS NOT NULL
      WHEN 'delete' THEN cid IS NULL
      ELSE true
    END
  )
);

-- A repo's events in order (backfill status, the event-to-block validate check).
CREATE INDEX events_did_id ON events (did, id);
CREATE INDEX events_expires_at ON events (expires_at) WHERE expires_at IS NOT NULL;

-- Blobs (images, video) referenced by records, when blob mirroring is on; one blobstore object
-- each. Keyed by the CID string because that is how records name them (`$link`) and how the
-- blobstore key is derived; there are orders of magnitude fewer blobs than blocks.
CREATE TABLE blobs (
  cid        text PRIMARY KEY,
  -- The repo the blob was (or was to be) fetched from; another repo may reference it too.
  did        text,
  size       bigint CHECK (size >= 0),
  mime       text,
  status     text NOT NULL CHECK (status IN ('present', 'missing')),
  -- The blobstore key, when present.
  key        text,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT blobs_present_has_key CHECK (status <> 'present' OR key IS NOT NULL)
);

-- Components of a multiplexed blobstore that missed a write or held a bad copy.
CREATE TABLE heal_queue (
  id           bigserial PRIMARY KEY,
  key          text NOT NULL,
  component    text NOT NULL,
  reason       text NOT NULL CHECK (reason IN ('missed-write', 'missing', 'corrupt')),
  detail       text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  -- Repeated reports of an open entry update it in place instead of adding rows.
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  seen_count   integer NOT NULL DEFAULT 1 CHECK (seen_count >= 1),
  healed_at    timestamptz
);

-- At most one open entry per key and component; healed entries stay as history.
CREATE UNIQUE INDEX heal_queue_open ON heal_queue (key, component) WHERE healed_at IS NULL;

-- What walks found.
CREATE TABLE walk_findings (
  id         bigserial PRIMARY KEY,
  walk_id    text NOT NULL,
  check_name text NOT NULL,
  severity   text NOT NULL CHECK (severity IN ('error', 'warn', 'info')),
  node_type  text NOT NULL,
  node_key   text NOT NULL,
  -- The edges that led from a root to the node, so a finding can be traced.
  route      jsonb,
  detail     text,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- A walk steps each node once and a check reports a node once, so this is unique; an activity
-- retried from its last heartbeat re-records with ON CONFLICT DO NOTHING and the findings of a
-- resumed walk equal those of an uninterrupted one. It also serves lookups by walk.
CREATE UNIQUE INDEX walk_findings_walk_id ON walk_findings (walk_id, check_name, node_type, node_key);

-- Cursors and job bookkeeping (firehose cursor, rotating scrub offset, last GC, ...).
CREATE TABLE job_state (
  key        text PRIMARY KEY,
  value      jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
