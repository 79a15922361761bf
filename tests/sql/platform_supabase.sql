-- The platform's database as deployed (PLATFORM.md §1), for the tests: what Supabase provides
-- (API roles, auth.users, auth.uid(), the supabase_realtime publication), the platform's jobs
-- table, then its five training_predictions migrations verbatim (supabase/migrations/
-- 20251115115752 … 20251212000002 of canfieldjuan/finetunelab.ai, minus their "verify" selects).

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then create role anon nologin noinherit; end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then create role authenticated nologin noinherit; end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then create role service_role nologin noinherit bypassrls; end if;
end
$$;
create schema if not exists auth;
create table auth.users (id uuid primary key);
create function auth.uid() returns uuid language sql stable as $fn$
  select (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid
$fn$;
grant usage on schema auth to anon, authenticated, service_role;
grant execute on function auth.uid() to anon, authenticated, service_role;
create publication supabase_realtime;

create table public.local_training_jobs (id text primary key, user_id uuid references auth.users (id));

-- 20251115115752_create_training_predictions_table.sql
CREATE TABLE IF NOT EXISTS training_predictions (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  job_id TEXT NOT NULL,
  user_id UUID NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
  epoch INTEGER NOT NULL,
  step INTEGER NOT NULL,
  sample_index INTEGER NOT NULL,
  prompt TEXT NOT NULL,
  ground_truth TEXT,
  prediction TEXT NOT NULL,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  CONSTRAINT fk_training_predictions_job
    FOREIGN KEY (job_id)
    REFERENCES local_training_jobs(id)
    ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS idx_training_predictions_job_id ON training_predictions(job_id);
CREATE INDEX IF NOT EXISTS idx_training_predictions_job_epoch ON training_predictions(job_id, epoch);
CREATE INDEX IF NOT EXISTS idx_training_predictions_user_id ON training_predictions(user_id);
ALTER TABLE training_predictions ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can view their own predictions" ON training_predictions FOR SELECT USING (auth.uid() = user_id);
CREATE POLICY "Users can create their own predictions" ON training_predictions FOR INSERT WITH CHECK (auth.uid() = user_id);
CREATE POLICY "Users can delete their own predictions" ON training_predictions FOR DELETE USING (auth.uid() = user_id);

-- 20251209000000_add_prediction_scores.sql
ALTER TABLE training_predictions
  ADD COLUMN IF NOT EXISTS exact_match DOUBLE PRECISION,
  ADD COLUMN IF NOT EXISTS char_error_rate DOUBLE PRECISION,
  ADD COLUMN IF NOT EXISTS length_ratio DOUBLE PRECISION,
  ADD COLUMN IF NOT EXISTS word_overlap DOUBLE PRECISION;
COMMENT ON COLUMN training_predictions.exact_match IS 'Binary exact match: 1.0 = perfect match, 0.0 = no match. NULL if no ground_truth.';
CREATE INDEX IF NOT EXISTS idx_training_predictions_job_epoch_scores ON training_predictions(job_id, epoch) WHERE exact_match IS NOT NULL;

-- 20251212000000_add_prediction_identity_columns.sql
ALTER TABLE training_predictions
  ADD COLUMN IF NOT EXISTS prompt_id TEXT,
  ADD COLUMN IF NOT EXISTS source_index INTEGER,
  ADD COLUMN IF NOT EXISTS sample_source TEXT,
  ADD COLUMN IF NOT EXISTS sample_source_id TEXT;
CREATE INDEX IF NOT EXISTS idx_training_predictions_job_prompt_id ON training_predictions(job_id, prompt_id) WHERE prompt_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_training_predictions_job_source ON training_predictions(job_id, sample_source, sample_source_id) WHERE sample_source IS NOT NULL;

-- 20251212000001_add_prediction_generation_metadata.sql
ALTER TABLE training_predictions
  ADD COLUMN IF NOT EXISTS prompt_tokens INTEGER,
  ADD COLUMN IF NOT EXISTS completion_tokens INTEGER,
  ADD COLUMN IF NOT EXISTS total_tokens INTEGER,
  ADD COLUMN IF NOT EXISTS latency_ms INTEGER,
  ADD COLUMN IF NOT EXISTS max_new_tokens INTEGER,
  ADD COLUMN IF NOT EXISTS do_sample BOOLEAN;
CREATE INDEX IF NOT EXISTS idx_training_predictions_job_epoch_latency ON training_predictions(job_id, epoch) WHERE latency_ms IS NOT NULL;

-- 20251212000002_add_prediction_validation_columns.sql
ALTER TABLE training_predictions
  ADD COLUMN IF NOT EXISTS validation_pass BOOLEAN,
  ADD COLUMN IF NOT EXISTS validation_errors JSONB,
  ADD COLUMN IF NOT EXISTS validation_kind TEXT;
CREATE INDEX IF NOT EXISTS idx_training_predictions_job_epoch_validation ON training_predictions(job_id, epoch) WHERE validation_pass IS NOT NULL;

-- Supabase's default privileges: the API roles get the table; RLS decides the rows.
grant all on table training_predictions to anon, authenticated, service_role;
grant all on table local_training_jobs to anon, authenticated, service_role;
