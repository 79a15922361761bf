-- Supabase compatibility: make a bare Postgres look like Supabase where it is not.
--
-- On Supabase every object below already exists, and this file changes nothing. On a plain
-- Postgres (self-hosted, CI) it creates what the next migrations rely on: the API roles
-- anon / authenticated / service_role, the auth schema, and auth.uid() reading the request's
-- JWT claims exactly as Supabase's does. Each is created only where absent.

do $$
begin
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
    -- Supabase's definition: the `sub` claim of the request's JWT, as PostgREST sets it.
    create function auth.uid() returns uuid
      language sql stable
      set search_path = ''
    as $fn$
      select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
      )::uuid
    $fn$;
    grant usage on schema auth to anon, authenticated, service_role;
    grant execute on function auth.uid() to anon, authenticated, service_role;
  end if;
end
$$;
