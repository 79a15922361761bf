"""Where prediction rows go: the local JSONL spool (always), Supabase REST or Postgres."""
