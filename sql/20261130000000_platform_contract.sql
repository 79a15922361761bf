-- The platform's training_predictions, plus what this image adds. Never a change to what the
-- platform made: its columns, types, indexes, policies and foreign keys stay as they are.
--
-- What this file adds, each only where absent (so applying it twice changes nothing):
--   * columns: epoch_progress (the round's fractional epoch; `epoch` stays the integer the UI
--     groups by), temperature, top_p, stop_reason, text_truncated, metrics (jsonb: registered
--     scores beyond the platform's four), generation_error;
--   * the unique key training_predictions_job_step_sample_key on (job_id, step, sample_index),
--     which makes a retried or replayed write store a row once. The platform's pods did plain
--     inserts, so a retried insert may have stored a row twice: before the key is created, every
--     copy but the earliest is MOVED (not deleted) to training_predictions_duplicates, as the
--     whole row in jsonb, and the count is reported (a NOTICE, printed in the migration log);
--   * the platform's indexes, foreign keys (auth.users, local_training_jobs: only where those
--     tables exist) and Row Level Security policies, where a fresh database lacks them;
--   * the table in the `supabase_realtime` publication (where it exists), so the UI's live
--     stream (postgres_changes INSERT, filter job_id=eq.J) receives the rows.
--
-- Decision on tables an earlier version of this image created (bigint id, uuid job_id, boolean
-- exact_match, fractional double epoch, double latency_ms, nullable prompt / prediction, its own
-- policy and index names): that table was this image's own, never the platform's, so it is
-- converted in place to the platform's types, each conversion guarded by the column's current
-- type (the platform's table never matches the guard): job_id::text; exact_match true/false ->
-- 1.0/0.0; epoch -> floor(epoch), the fraction kept in epoch_progress; latency_ms rounded; a NULL
-- prompt / prediction -> ''; id -> a new uuid (nothing references it). Its old policies and
-- indexes (named "Predictions are … by their owner", training_predictions_*_idx) are replaced by
-- the platform's. Old validation_errors (plain strings) are left as they were written.

-- 1. Columns this image adds (nullable or defaulted: the platform's own writer never sends them).
alter table public.training_predictions add column if not exists epoch_progress double precision;
alter table public.training_predictions add column if not exists temperature double precision;
alter table public.training_predictions add column if not exists top_p double precision;
alter table public.training_predictions add column if not exists stop_reason text;
alter table public.training_predictions add column if not exists text_truncated boolean not null default false;
alter table public.training_predictions add column if not exists metrics jsonb;
alter table public.training_predictions add column if not exists generation_error text;

comment on column public.training_predictions.epoch_progress is
  'The fractional epoch of the round (Trainer state.epoch); epoch is its integer part.';
comment on column public.training_predictions.text_truncated is
  'true when prompt, ground_truth or prediction was cut to the configured cap (max_text_chars).';
comment on column public.training_predictions.metrics is
  'Scores beyond the four score columns, by name: {"word_f1": 0.5}. NULL without ground truth.';
comment on column public.training_predictions.generation_error is
  'Why this sample failed to generate (prediction is then empty); NULL when it generated.';

-- 2. A table an earlier version of this image created: the platform's types.
do $$
declare
  t constant regclass := 'public.training_predictions'::regclass;
  col_type text;
  pkey text;
begin
  select data_type into col_type from information_schema.columns
   where table_schema = 'public' and table_name = 'training_predictions' and column_name = 'job_id';
  if col_type = 'uuid' then
    -- Its foreign key to a uuid training_jobs table was this image's; the platform's jobs are text.
    alter table public.training_predictions drop constraint if exists training_predictions_job_id_fkey;
    alter table public.training_predictions alter column job_id type text using job_id::text;
  end if;

  select data_type into col_type from information_schema.columns
   where table_schema = 'public' and table_name = 'training_predictions' and column_name = 'epoch';
  if col_type = 'double precision' then
    update public.training_predictions set epoch_progress = epoch where epoch_progress is null;
    alter table public.training_predictions
      alter column epoch type integer using coalesce(floor(epoch), 0)::integer,
      alter column epoch set not null;
  end if;

  select data_type into col_type from information_schema.columns
   where table_schema = 'public' and table_name = 'training_predictions' and column_name = 'exact_match';
  if col_type = 'boolean' then
    alter table public.training_predictions alter column exact_match type double precision
      using case when exact_match then 1.0 when not exact_match then 0.0 end;
  end if;

  select data_type into col_type from information_schema.columns
   where table_schema = 'public' and table_name = 'training_predictions' and column_name = 'latency_ms';
  if col_type = 'double precision' then
    alter table public.training_predictions alter column latency_ms type integer using round(latency_ms)::integer;
  end if;

  if exists (select 1 from information_schema.columns where table_schema = 'public'
             and table_name = 'training_predictions' and column_name in ('prompt', 'prediction')
             and is_nullable = 'YES') then
    update public.training_predictions set prompt = '' where prompt is null;
    update public.training_predictions set prediction = '' where prediction is null;
    alter table public.training_predictions alter column prompt set not null, alter column prediction set not null;
  end if;

  select data_type into col_type from information_schema.columns
   where table_schema = 'public' and table_name = 'training_predictions' and column_name = 'id';
  if col_type = 'bigint' then
    select conname into pkey from pg_constraint where conrelid = t and contype = 'p';
    alter table public.training_predictions alter column id drop identity if exists;
    alter table public.training_predictions alter column id drop default;
    if pkey is not null then
      execute format('alter table public.training_predictions drop constraint %I', pkey);
    end if;
    alter table public.training_predictions alter column id type uuid using gen_random_uuid();
    alter table public.training_predictions alter column id set default gen_random_uuid();
    alter table public.training_predictions add primary key (id);
  end if;
end
$$;

drop policy if exists "Predictions are viewable by their owner" on public.training_predictions;
drop policy if exists "Predictions are deletable by their owner" on public.training_predictions;
drop index if exists public.training_predictions_job_epoch_idx;
drop index if exists public.training_predictions_job_step_idx;
drop index if exists public.training_predictions_job_prompt_idx;
drop index if exists public.training_predictions_user_idx;

-- 3. Where the duplicate copies go: the whole row as it was, never deleted. Only the service
--    role reads it (RLS on, no policy).
create table if not exists public.training_predictions_duplicates (
  moved_id     bigint generated always as identity primary key,
  job_id       text not null,
  step         integer not null,
  sample_index integer not null,
  original     jsonb not null,
  moved_at     timestamptz not null default now()
);
comment on table public.training_predictions_duplicates is
  'Extra copies of a (job_id, step, sample_index) moved out of training_predictions before its unique key was created.';
alter table public.training_predictions_duplicates enable row level security;
revoke all on table public.training_predictions_duplicates from anon, authenticated;
grant select on table public.training_predictions_duplicates to service_role;

-- 4. The unique key. The earliest copy (created_at, then id) of each key stays in place.
do $$
declare
  moved integer;
begin
  if exists (select 1 from pg_constraint where conname = 'training_predictions_job_step_sample_key'
             and conrelid = 'public.training_predictions'::regclass) then
    return;
  end if;
  with ranked as (
    select id, row_number() over (partition by job_id, step, sample_index
                                  order by created_at nulls last, id) as copy
      from public.training_predictions
  ), extra as (
    delete from public.training_predictions p using ranked r
     where p.id = r.id and r.copy > 1
    returning p.*
  ), kept as (
    insert into public.training_predictions_duplicates (job_id, step, sample_index, original)
    select e.job_id, e.step, e.sample_index, to_jsonb(e) from extra e
    returning 1
  )
  select count(*) into moved from kept;
  raise notice 'training_predictions: % duplicate row(s) of a (job_id, step, sample_index) moved to training_predictions_duplicates', moved;
  alter table public.training_predictions
    add constraint training_predictions_job_step_sample_key unique (job_id, step, sample_index);
end
$$;

do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'training_predictions_stop_reason_check'
                 and conrelid = 'public.training_predictions'::regclass) then
    alter table public.training_predictions
      add constraint training_predictions_stop_reason_check check (stop_reason in ('eos', 'length'));
  end if;
end
$$;

-- 5. The platform's foreign keys, where their targets exist and no foreign key on the column
--    does yet (a bare Postgres has neither table). Added NOT VALID, then validated: rows that
--    name a missing user or job (which the platform's table could hold) keep the migration from
--    failing; the key then checks new rows only, and the notice says so.
do $$
declare
  t constant regclass := 'public.training_predictions'::regclass;
  has_fk boolean;
begin
  select exists (select 1 from pg_constraint c join pg_attribute a on a.attrelid = t and a.attnum = any (c.conkey)
                  where c.conrelid = t and c.contype = 'f' and a.attname = 'user_id') into has_fk;
  if to_regclass('auth.users') is not null and not has_fk then
    alter table public.training_predictions add constraint training_predictions_user_id_fkey
      foreign key (user_id) references auth.users (id) on delete cascade not valid;
    begin
      alter table public.training_predictions validate constraint training_predictions_user_id_fkey;
    exception when foreign_key_violation then
      raise notice 'training_predictions: some rows name a user not in auth.users; the foreign key checks new rows only';
    end;
  end if;

  select exists (select 1 from pg_constraint c join pg_attribute a on a.attrelid = t and a.attnum = any (c.conkey)
                  where c.conrelid = t and c.contype = 'f' and a.attname = 'job_id') into has_fk;
  if exists (select 1 from information_schema.columns where table_schema = 'public'
             and table_name = 'local_training_jobs' and column_name = 'id' and data_type in ('text', 'character varying'))
     and not has_fk then
    alter table public.training_predictions add constraint fk_training_predictions_job
      foreign key (job_id) references public.local_training_jobs (id) on delete cascade not valid;
    begin
      alter table public.training_predictions validate constraint fk_training_predictions_job;
    exception when foreign_key_violation then
      raise notice 'training_predictions: some rows name a job not in local_training_jobs; the foreign key checks new rows only';
    end;
  end if;
end
$$;

-- 6. The platform's indexes (the UI reads a job's rows by epoch; partial ones for its score,
--    latency, validation, prompt and source queries).
create index if not exists idx_training_predictions_job_id on public.training_predictions (job_id);
create index if not exists idx_training_predictions_job_epoch on public.training_predictions (job_id, epoch);
create index if not exists idx_training_predictions_user_id on public.training_predictions (user_id);
create index if not exists idx_training_predictions_job_epoch_scores
  on public.training_predictions (job_id, epoch) where exact_match is not null;
create index if not exists idx_training_predictions_job_prompt_id
  on public.training_predictions (job_id, prompt_id) where prompt_id is not null;
create index if not exists idx_training_predictions_job_source
  on public.training_predictions (job_id, sample_source, sample_source_id) where sample_source is not null;
create index if not exists idx_training_predictions_job_epoch_latency
  on public.training_predictions (job_id, epoch) where latency_ms is not null;
create index if not exists idx_training_predictions_job_epoch_validation
  on public.training_predictions (job_id, epoch) where validation_pass is not null;

-- 7. Row Level Security as the platform has it: a user sees, creates and deletes their own
--    predictions; no update policy (predictions are immutable). The pod writes with the
--    service role, which bypasses RLS.
alter table public.training_predictions enable row level security;
do $$
begin
  if not exists (select 1 from pg_policies where schemaname = 'public' and tablename = 'training_predictions'
                 and policyname = 'Users can view their own predictions') then
    create policy "Users can view their own predictions" on public.training_predictions
      for select using (auth.uid() = user_id);
  end if;
  if not exists (select 1 from pg_policies where schemaname = 'public' and tablename = 'training_predictions'
                 and policyname = 'Users can create their own predictions') then
    create policy "Users can create their own predictions" on public.training_predictions
      for insert with check (auth.uid() = user_id);
  end if;
  if not exists (select 1 from pg_policies where schemaname = 'public' and tablename = 'training_predictions'
                 and policyname = 'Users can delete their own predictions') then
    create policy "Users can delete their own predictions" on public.training_predictions
      for delete using (auth.uid() = user_id);
  end if;
end
$$;

-- Grants: on Supabase the default privileges already give these (and more); a bare Postgres
-- gives nothing. Only granted, never revoked: what the platform granted stays.
grant usage on schema public to anon, authenticated, service_role;
grant select, insert, delete on table public.training_predictions to authenticated;
grant select, insert, update, delete on table public.training_predictions to service_role;

-- 8. The Realtime publication: the platform's live stream listens for INSERTs on this table.
do $$
begin
  if exists (select 1 from pg_publication where pubname = 'supabase_realtime')
     and not exists (select 1 from pg_publication_tables where pubname = 'supabase_realtime'
                     and schemaname = 'public' and tablename = 'training_predictions') then
    alter publication supabase_realtime add table public.training_predictions;
  end if;
end
$$;
