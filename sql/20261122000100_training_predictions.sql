-- training_predictions: what a model answered, while it trained, for a fixed sample of prompts.
--
-- The table is the platform's (FineTune Lab, supabase/migrations/*prediction*): this file creates
-- exactly its table where none exists (a fresh database), with the platform's five migrations
-- folded into one create. Where the platform (or an earlier version of this image) made the
-- table already, `if not exists` leaves it as it is; 20261130000000_platform_contract.sql then
-- adds what this image needs (columns, the unique key, the Realtime publication) and brings a
-- table an earlier version of this image made to the platform's types.
--
-- Earlier versions of this file created this image's own table (bigint id, uuid job_id, boolean
-- exact_match, fractional epoch). A database that applied them keeps its record in
-- supabase_migrations.schema_migrations, so this file does not run there again; the contract
-- migration converts that table instead.
--
-- The platform's foreign keys (auth.users, local_training_jobs) and its Row Level Security are
-- added by the contract migration, where their targets exist: a bare Postgres has neither table.

create table if not exists public.training_predictions (
  id                uuid primary key default gen_random_uuid(),
  job_id            text not null,
  user_id           uuid not null,
  epoch             integer not null,
  step              integer not null,
  sample_index      integer not null,
  prompt            text not null,
  ground_truth      text,
  prediction        text not null,
  created_at        timestamptz default now(),
  exact_match       double precision,
  char_error_rate   double precision,
  length_ratio      double precision,
  word_overlap      double precision,
  prompt_id         text,
  source_index      integer,
  sample_source     text,
  sample_source_id  text,
  prompt_tokens     integer,
  completion_tokens integer,
  total_tokens      integer,
  latency_ms        integer,
  max_new_tokens    integer,
  do_sample         boolean,
  validation_pass   boolean,
  validation_errors jsonb,
  validation_kind   text
);
