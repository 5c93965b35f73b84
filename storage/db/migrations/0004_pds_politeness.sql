-- Per-PDS politeness shared by every worker process on every host (issue 11): a PDS sees at most
-- `concurrency` requests in flight from the whole fleet, request starts at least
-- `min_interval` apart, and nobody starts one during a cool-down any worker learned of (a 429).
--
-- Slots are leases with an expiry, renewed by their holder while the request runs: a worker
-- killed mid-request loses its slots when they expire (REPOWALK_PDS_LEASE_SECONDS), not never.
-- Every time is the database's clock, so hosts with skewed clocks still agree.

CREATE TABLE pds_hosts (
  host          text PRIMARY KEY,            -- a URL's host: name and port
  next_start_at timestamptz NOT NULL DEFAULT '-infinity',
  cool_until    timestamptz NOT NULL DEFAULT '-infinity'
);

CREATE TABLE pds_leases (
  lease_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  host       text NOT NULL,
  holder     text NOT NULL,                  -- host name, pid and a random tag of the worker process
  expires_at timestamptz NOT NULL
);
CREATE INDEX pds_leases_host ON pds_leases (host, expires_at);

-- One attempt at a slot, in one round trip. The host's row lock serialises attempts on that host
-- only. Returns the new lease, or none and how long to wait: the cool-down or pacing left, or 0
-- when every slot is taken (the caller polls).
CREATE FUNCTION pds_lease_acquire(p_host text, p_holder text, p_concurrency int, p_min_interval_ms int, p_ttl_ms int)
RETURNS TABLE (lease_id bigint, wait_ms double precision, cooling_down boolean)
LANGUAGE plpgsql AS $$
DECLARE
  h pds_hosts%ROWTYPE;
  t timestamptz := clock_timestamp();
  held int;
BEGIN
  INSERT INTO pds_hosts (host) VALUES (p_host) ON CONFLICT (host) DO NOTHING;
  SELECT * INTO h FROM pds_hosts WHERE host = p_host FOR UPDATE;
  IF h.cool_until > t THEN
    RETURN QUERY SELECT NULL::bigint, (extract(epoch FROM h.cool_until - t) * 1000)::double precision, true;
    RETURN;
  END IF;
  IF h.next_start_at > t THEN
    RETURN QUERY SELECT NULL::bigint, (extract(epoch FROM h.next_start_at - t) * 1000)::double precision, false;
    RETURN;
  END IF;
  DELETE FROM pds_leases l WHERE l.host = p_host AND l.expires_at <= t;
  SELECT count(*) INTO held FROM pds_leases l WHERE l.host = p_host;
  IF held >= p_concurrency THEN
    RETURN QUERY SELECT NULL::bigint, 0::double precision, false;
    RETURN;
  END IF;
  UPDATE pds_hosts SET next_start_at = t + make_interval(secs => p_min_interval_ms / 1000.0) WHERE host = p_host;
  RETURN QUERY
    INSERT INTO pds_leases AS l (host, holder, expires_at)
    VALUES (p_host, p_holder, t + make_interval(secs => p_ttl_ms / 1000.0))
    RETURNING l.lease_id, 0::double precision, false;
END;
$$;
