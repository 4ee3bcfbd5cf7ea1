-- crmsync schema, version 4: the application writes each batch of a pull through a temporary table
-- (filled with one binary COPY, dropped at the end of its transaction), so the role it switches to
-- must be allowed temporary tables in this database. PUBLIC has that by default; a database where it
-- was revoked grants it to crmsync_app here. A migration user that may not grant it is told why.
DO $$
BEGIN
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO crmsync_app', current_database());
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE WARNING 'crmsync: could not grant TEMPORARY on database % to crmsync_app (%); pulls need it unless PUBLIC has it',
            current_database(), SQLERRM;
END
$$;
