-- Supabase compatibility: make a bare Postgres look like Supabase where it is not.
--
-- On Supabase every object below already exists, and this file changes nothing. On a plain
-- Postgres (self-hosted, CI) it creates what the next migrations rely on: the API roles
-- anon / authenticated / service_role, the auth schema, and auth.uid() reading the request's
-- JWT claims as Supabase's does. Each is created only where absent, so the same file runs
-- unchanged on both. auth.users is deliberately not created: it belongs to Supabase Auth, and
-- later migrations reference it only where it exists.

do $$
begin
  -- NOLOGIN: nobody connects as these roles; PostgREST (or a test) switches to them with SET ROLE.
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    -- The service role bypasses Row Level Security: that is what makes it the writer.
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

create schema if not exists auth;

do $$
begin
  if to_regprocedure('auth.uid()') is null then
    -- The `sub` claim of the request's JWT. PostgREST 9+ sets the whole payload as
    -- request.jwt.claims; older PostgREST set one setting per claim (request.jwt.claim.sub),
    -- which stays as the fallback. Not security definer: it only reads the caller's settings.
    create function auth.uid() returns uuid
      language sql stable
      set search_path = ''
    as $fn$
      select coalesce(
        nullif(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub', ''),
        nullif(current_setting('request.jwt.claim.sub', true), '')
      )::uuid
    $fn$;
    comment on function auth.uid() is
      'The requesting user''s id (the JWT sub claim), as on Supabase; null for anon and the service role.';
    grant usage on schema auth to anon, authenticated, service_role;
    grant execute on function auth.uid() to anon, authenticated, service_role;
  end if;
end
$$;
