-- Live sync: firehose frames that could not be applied, kept as data with their sequence
-- number (malformed or unknown frames, bad signatures, commits whose proof fails, error and
-- info frames from the upstream), written in the same transaction as the cursor that passes
-- them. The cursor itself is a job_state row (`sync/cursor/<host>`).
CREATE TABLE sync_frame_errors (
  id         bigserial PRIMARY KEY,
  host       text NOT NULL,
  -- NULL when the frame's seq could not be read (or the frame has none: #info, error frames).
  seq        bigint,
  problem    text NOT NULL,
  detail     text,
  -- The frame's first 64 KiB, when it could not be decoded.
  frame      bytea,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX sync_frame_errors_host_id ON sync_frame_errors (host, id);
