"""The platform's read side as SQL (PLATFORM.md §2; its app/api/training/predictions/[jobId]/
routes and components/training/PredictionsComparison.tsx), for tests that run it on a real
Postgres. The routes read with the service role after checking job ownership; PostgREST turns
their supabase-js calls into these statements (the aggregates the routes compute in JavaScript
are done here in SQL, `avg(exact_match)` included, which needs a numeric column)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

#: GET /api/training/predictions/{jobId}[?epoch=N]: select * … order by epoch, sample_index, limit/offset.
PAGE = """
select * from public.training_predictions
 where job_id = %(job)s and (%(epoch)s::integer is null or epoch = %(epoch)s::integer)
 order by epoch, sample_index limit %(limit)s offset %(offset)s
"""
#: The same route's `count: 'exact'` of the job's rows, and its distinct epochs.
COUNT = "select count(*) from public.training_predictions where job_id = %(job)s"
EPOCHS_DISTINCT = "select distinct epoch from public.training_predictions where job_id = %(job)s order by epoch"
#: …/epochs: select epoch, step where job_id order by epoch → per epoch: count, max(step).
EPOCHS = """
select epoch, count(*) as prediction_count, max(step) as latest_step
  from public.training_predictions where job_id = %(job)s group by epoch order by epoch
"""
#: …/trends: per epoch the averages of the non-null scores, min/max CER, validation pass rate.
TRENDS = """
select epoch, max(step) as step, count(*) as sample_count,
       avg(exact_match) as avg_exact_match, avg(char_error_rate) as avg_char_error_rate,
       avg(length_ratio) as avg_length_ratio, avg(word_overlap) as avg_word_overlap,
       min(char_error_rate) as min_char_error_rate, max(char_error_rate) as max_char_error_rate,
       avg(case when validation_pass then 1.0 when not validation_pass then 0.0 end) as validation_pass_rate
  from public.training_predictions where job_id = %(job)s group by epoch order by epoch
"""
#: PredictionsComparison: one sample's predictions across epochs.
COMPARE = """
select epoch, step, prediction from public.training_predictions
 where job_id = %(job)s and sample_index = %(sample)s order by epoch, step
"""
#: …/stream: Supabase Realtime postgres_changes INSERT on public.training_predictions, which
#: needs the table in the supabase_realtime publication; the filter job_id=eq.J is a text equality.
REALTIME = """
select exists (select 1 from pg_publication_tables
                where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'training_predictions')
"""


def read_side(conn: psycopg.Connection, job: str, *, epoch: int | None = None, sample: int = 0) -> dict[str, Any]:
    """Every query of the platform's read side for `job`, as the routes would get them."""
    p = {"job": job, "epoch": epoch, "limit": 1000, "offset": 0, "sample": sample}
    return {
        "page": conn.cursor(row_factory=dict_row).execute(PAGE, p).fetchall(),
        "count": conn.execute(COUNT, p).fetchone()[0],
        "epochs_distinct": [r[0] for r in conn.execute(EPOCHS_DISTINCT, p)],
        "epochs": conn.execute(EPOCHS, p).fetchall(),
        "trends": conn.execute(TRENDS, p).fetchall(),
        "compare": conn.execute(COMPARE, p).fetchall(),
        "realtime": conn.execute(REALTIME).fetchone()[0],
    }
