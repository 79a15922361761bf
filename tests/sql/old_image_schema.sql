-- The table as earlier versions of this image created it (sql/20261122000100 before the platform
-- contract): kept for the tests of the contract migration, which converts it in place.

-- training_predictions: what a model answered, while it trained, for a fixed sample of prompts.
--
-- The training pod writes one row per (job, global step, sample) as the service role; the
-- platform's UI reads a job's rows to show its predictions and compare them across epochs. Only
-- the job's owner can read (and delete) them. The columns after `id` are predictions/store/rows.py's
-- ROW_COLUMNS, in that order. Every statement is idempotent: applying this file twice changes
-- nothing.

create table if not exists public.training_predictions (
  id                bigint generated always as identity primary key,
  job_id            uuid not null,
  user_id           uuid not null,
  epoch             double precision,          -- fractional: a round may fall mid-epoch
  step              integer not null,          -- the global optimiser step of the round
  sample_index      integer not null,          -- position in the fixed sample, 0..n-1
  prompt            text,                      -- the rendered prompt, exactly what the model saw
  ground_truth      text,
  prediction        text,
  prompt_id         text,                      -- a hash of the rendered prompt: one sample across rounds
  source_index      integer,                   -- the row's index in its source file
  sample_source     text,                      -- eval | train | samples
  sample_source_id  text,                      -- the source file's name
  prompt_tokens     integer,
  completion_tokens integer,
  total_tokens      integer,
  latency_ms        double precision,
  max_new_tokens    integer,
  do_sample         boolean,
  temperature       double precision,
  top_p             double precision,
  stop_reason       text,
  exact_match       boolean,
  char_error_rate   double precision,
  length_ratio      double precision,
  word_overlap      double precision,
  validation_pass   boolean,                   -- null when no validator is configured
  validation_errors jsonb,                     -- a list of messages, or null
  validation_kind   text,                      -- json_parse | json_schema | null
  text_truncated    boolean not null default false,
  created_at        timestamptz not null default now()
);

-- Columns this image adds to the ones the platform's UI already reads: a table made before this
-- image (by the platform) lacks them, and `create table if not exists` above left it as it was.
alter table public.training_predictions add column if not exists temperature double precision;
alter table public.training_predictions add column if not exists top_p double precision;
alter table public.training_predictions add column if not exists stop_reason text;
alter table public.training_predictions add column if not exists text_truncated boolean not null default false;

comment on table public.training_predictions is
  'Predictions on a fixed sample of prompts, generated during training; one row per (job_id, step, sample_index).';
comment on column public.training_predictions.text_truncated is
  'true when prompt, ground_truth or prediction was cut to the configured cap (max_text_chars)';

do $$
begin
  -- A round is keyed by the global step; a retried or replayed write must not duplicate a row.
  -- The writers' ON CONFLICT names these columns, so the constraint must exist before any write.
  if not exists (select 1 from pg_constraint where conname = 'training_predictions_job_step_sample_key'
                 and conrelid = 'public.training_predictions'::regclass) then
    alter table public.training_predictions
      add constraint training_predictions_job_step_sample_key unique (job_id, step, sample_index);
  end if;
  if not exists (select 1 from pg_constraint where conname = 'training_predictions_stop_reason_check'
                 and conrelid = 'public.training_predictions'::regclass) then
    alter table public.training_predictions
      add constraint training_predictions_stop_reason_check check (stop_reason in ('eos', 'length'));
  end if;

  -- Foreign keys only where their targets exist: on Supabase, auth.users; on the platform, its
  -- training_jobs table (when its id is a uuid, like job_id). A bare Postgres (CI, self-hosted)
  -- has neither, and the table must work there too, so the references are added here rather
  -- than in the create table. Deleting a user or a job deletes its predictions.
  if to_regclass('auth.users') is not null
     and not exists (select 1 from pg_constraint where conname = 'training_predictions_user_id_fkey'
                     and conrelid = 'public.training_predictions'::regclass) then
    alter table public.training_predictions
      add constraint training_predictions_user_id_fkey
      foreign key (user_id) references auth.users (id) on delete cascade;
  end if;
  if exists (select 1 from information_schema.columns
             where table_schema = 'public' and table_name = 'training_jobs'
               and column_name = 'id' and data_type = 'uuid')
     and not exists (select 1 from pg_constraint where conname = 'training_predictions_job_id_fkey'
                     and conrelid = 'public.training_predictions'::regclass) then
    alter table public.training_predictions
      add constraint training_predictions_job_id_fkey
      foreign key (job_id) references public.training_jobs (id) on delete cascade;
  end if;
end
$$;

-- The UI's queries: a job's rows by epoch, by step, one prompt across rounds; a user's rows (and
-- the policies' filter).
create index if not exists training_predictions_job_epoch_idx on public.training_predictions (job_id, epoch);
create index if not exists training_predictions_job_step_idx on public.training_predictions (job_id, step);
create index if not exists training_predictions_job_prompt_idx on public.training_predictions (job_id, prompt_id);
create index if not exists training_predictions_user_idx on public.training_predictions (user_id);

-- Row Level Security: the owner reads and deletes their rows. There is no insert or update
-- policy: only the service role, which bypasses RLS, writes. `(select auth.uid())` is evaluated
-- once per statement, not once per row.
alter table public.training_predictions enable row level security;

drop policy if exists "Predictions are viewable by their owner" on public.training_predictions;
create policy "Predictions are viewable by their owner"
  on public.training_predictions for select to authenticated
  using ((select auth.uid()) = user_id);

drop policy if exists "Predictions are deletable by their owner" on public.training_predictions;
create policy "Predictions are deletable by their owner"
  on public.training_predictions for delete to authenticated
  using ((select auth.uid()) = user_id);

-- Explicit grants: Supabase's default privileges give new tables to anon and authenticated,
-- and a bare Postgres gives them nothing; either way the grants end up exactly these.
grant usage on schema public to anon, authenticated, service_role;
revoke all on table public.training_predictions from anon, authenticated;
grant select, delete on table public.training_predictions to authenticated;
grant select, insert, update, delete on table public.training_predictions to service_role;

do $$
declare
  -- Looked up rather than named: a table the platform made may name (or lack) it differently.
  seq text := pg_get_serial_sequence('public.training_predictions', 'id');
begin
  if seq is not null then
    execute format('revoke all on sequence %s from anon, authenticated', seq);
    execute format('grant usage, select on sequence %s to service_role', seq);
  end if;
end
$$;
