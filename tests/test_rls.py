"""Row Level Security on a real Postgres: every identity × operation, one line each."""

from __future__ import annotations

import json

import psycopg
import pytest

pytestmark = pytest.mark.postgres

OWNER = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"
JOB = "33333333-3333-4333-8333-333333333333"

INSERT = f"insert into public.training_predictions (job_id, user_id, step, sample_index, prediction) values ('{JOB}', '{OWNER}', 99, 0, 'x')"
OPERATIONS = {
    "select": f"select count(*) from public.training_predictions where job_id = '{JOB}'",
    "insert": INSERT,
    "update": f"update public.training_predictions set prediction = 'changed' where job_id = '{JOB}'",
    "delete": f"delete from public.training_predictions where job_id = '{JOB}'",
    "upsert": f"insert into public.training_predictions (job_id, user_id, step, sample_index, prediction) values ('{JOB}', '{OWNER}', 1, 0, 'y') on conflict (job_id, step, sample_index) do update set prediction = excluded.prediction",
}

# The owner's job has 2 rows; another user has a row of their own in another job. Each operation
# targets the owner's job. identity → operation → expected: "denied", or the rows seen / affected.
MATRIX = [
    ("anon", "select", "denied"),
    ("anon", "insert", "denied"),
    ("anon", "update", "denied"),
    ("anon", "delete", "denied"),
    ("anon", "upsert", "denied"),
    ("owner", "select", 2),
    ("owner", "insert", "denied"),
    ("owner", "update", "denied"),
    ("owner", "delete", 2),
    ("owner", "upsert", "denied"),
    ("other", "select", 0),
    ("other", "insert", "denied"),
    ("other", "update", "denied"),
    ("other", "delete", 0),
    ("other", "upsert", "denied"),
    ("service_role", "select", 2),
    ("service_role", "insert", 1),
    ("service_role", "update", 2),
    ("service_role", "delete", 2),
    ("service_role", "upsert", 1),
]

IDENTITIES = {
    "anon": ("anon", None),
    "owner": ("authenticated", OWNER),
    "other": ("authenticated", OTHER),
    "service_role": ("service_role", None),
}


@pytest.fixture
def seeded(migrated_db):
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        for step, user in ((1, OWNER), (2, OWNER), (1, OTHER)):
            job = JOB if user == OWNER else "44444444-4444-4444-8444-444444444444"
            conn.execute("insert into public.training_predictions (job_id, user_id, step, sample_index, prediction)"
                         " values (%s, %s, %s, 0, 'p')", (job, user, step))
    return migrated_db


@pytest.mark.parametrize("identity, operation, expected", MATRIX)
def test_identity_operation(seeded, identity, operation, expected):
    role, sub = IDENTITIES[identity]
    with psycopg.connect(seeded) as conn:  # a transaction, rolled back at the end
        conn.execute(f"set local role {role}")
        claims = json.dumps({"sub": sub, "role": role}) if sub else json.dumps({"role": role})
        conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        if expected == "denied":
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(OPERATIONS[operation])
            return
        cur = conn.execute(OPERATIONS[operation])
        seen = cur.fetchone()[0] if operation == "select" else cur.rowcount
        assert seen == expected
        conn.rollback()
