-- cached-redis: invalidation from PostgreSQL row changes.
--
-- Installs the trigger function cached_redis_notify() in the current schema
-- (the first of search_path). Run it once per database (psql -f, or copy it
-- into a migration); it is idempotent (CREATE OR REPLACE). Needs
-- PostgreSQL 11 or later (EXECUTE FUNCTION).
--
-- Attach it to every table a cached function reads:
--
--   CREATE TRIGGER users_cache
--       AFTER INSERT OR UPDATE OR DELETE ON users
--       FOR EACH ROW EXECUTE FUNCTION cached_redis_notify('cache_invalidation', 'user', 'id');
--
-- Trigger arguments, in order:
--
--   1. the channel, exactly as given to cached_redis::postgres::listen
--      (case included);
--   2. the prefix of the cached function (its `prefix = "..."` option, or
--      its default: module path and function name with `::` written as `.`);
--   3. and on: the columns whose values are the function's key arguments,
--      one per key argument, IN PARAMETER ORDER (skipped arguments such as
--      the database client are not key arguments). None: every change drops
--      the whole prefix.
--
-- The example sends, when the row with id 42 changes,
--
--   pg_notify('cache_invalidation', '{"prefix":"user","args":[42]}')
--
-- and the listener removes the entry of `user(db, 42)`.
--
-- The key of an entry is a hash of the JSON its key arguments serialize to
-- (serde_json), so each column's JSON (to_jsonb) must be exactly what the
-- Rust argument serializes to: integer columns for integer arguments (42),
-- text for String/&str ("alice"), boolean for bool, uuid for uuid::Uuid
-- ("0b5e..." lowercase, hyphenated), NULL for None. Types whose JSON forms
-- differ (timestamps, numeric with trailing zeros vs f64, enums renamed by
-- serde, composite arguments) do not map: the entry would silently not be
-- found. For those, give no columns (the whole prefix is dropped), or send
-- your own payloads with pg_notify.
--
-- Which changes notify is set by the trigger's events:
--
--   UPDATE, DELETE  the OLD row's values: the entry that may now be stale.
--                   On UPDATE the NEW row's values too when they differ (a
--                   key column changed).
--   INSERT          the NEW row's values. Include INSERT when functions
--                   cache an absence (`cache_none`) or results that a new
--                   row changes (e.g. a list keyed by a foreign key);
--                   leave it out otherwise.
--   TRUNCATE        (a FOR EACH STATEMENT trigger) the whole prefix.
--
-- A FOR EACH STATEMENT trigger always drops the whole prefix: one
-- notification per statement, for tables changed in bulk. To skip updates
-- that change nothing, add WHEN (OLD IS DISTINCT FROM NEW) to an
-- UPDATE-only row trigger.
--
-- Notifications are sent when the transaction commits, once per distinct
-- payload (PostgreSQL folds duplicates within a transaction); a rolled-back
-- transaction sends none. A payload that would be too long for pg_notify (8000
-- bytes or more) is replaced by the prefix-only one, and a column named in
-- the trigger that the table does not have drops the whole prefix with a
-- WARNING, so a mistake costs recomputation, never a stale entry nor a
-- failed write.

CREATE OR REPLACE FUNCTION cached_redis_notify() RETURNS trigger
LANGUAGE plpgsql AS $cached_redis$
DECLARE
    channel  text;
    prefix   text;
    whole    text;     -- the prefix-only payload
    images   jsonb[] := '{}';
    image    jsonb;
    args     text;
    payload  text;
    col      text;
    i        integer;
BEGIN
    IF TG_NARGS < 2 THEN
        RAISE EXCEPTION 'cached_redis_notify: trigger % on %.% needs the arguments (channel, prefix [, key column ...])',
            TG_NAME, TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    IF TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'cached_redis_notify: trigger % on %.% must be an AFTER trigger',
            TG_NAME, TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    channel := TG_ARGV[0];
    prefix := TG_ARGV[1];
    whole := '{"prefix":' || to_json(prefix)::text || '}';

    IF TG_LEVEL = 'ROW' AND TG_NARGS > 2 THEN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            images := array_append(images, to_jsonb(OLD));
        END IF;
        IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND to_jsonb(NEW) IS DISTINCT FROM to_jsonb(OLD)) THEN
            images := array_append(images, to_jsonb(NEW));
        END IF;
    END IF;

    IF cardinality(images) = 0 THEN
        PERFORM pg_notify(channel, whole);
        RETURN NULL;
    END IF;

    FOREACH image IN ARRAY images LOOP
        args := NULL;
        FOR i IN 2 .. TG_NARGS - 1 LOOP
            col := TG_ARGV[i];
            IF NOT image ? col THEN
                RAISE WARNING 'cached_redis_notify: trigger % on %.%: no column "%"; invalidating the whole prefix %',
                    TG_NAME, TG_TABLE_SCHEMA, TG_TABLE_NAME, col, prefix;
                args := NULL;
                EXIT;
            END IF;
            -- jsonb's text form: 42, "alice", null, true, {"a": 1}.
            args := coalesce(args || ',', '') || (image -> col)::text;
        END LOOP;
        IF args IS NULL THEN
            payload := whole;
        ELSE
            payload := '{"prefix":' || to_json(prefix)::text || ',"args":[' || args || ']}';
            IF octet_length(payload) >= 8000 THEN
                payload := whole;
            END IF;
        END IF;
        -- Identical payloads of one transaction are delivered once.
        PERFORM pg_notify(channel, payload);
    END LOOP;
    RETURN NULL;
END
$cached_redis$;

COMMENT ON FUNCTION cached_redis_notify() IS
    'cached-redis: AFTER trigger sending pg_notify(channel, {"prefix":..., "args":[key column values]}); arguments: channel, prefix, key columns in parameter order';
