"""Row Level Security on a real Postgres: every identity × operation, one line each."""

from __future__ import annotations

import contextlib
import json
import uuid

import psycopg
import pytest

from predictions.store.migrations import apply_migrations

pytestmark = pytest.mark.postgres

OWNER = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"
JOB = "33333333-3333-4333-8333-333333333333"

INSERT = ("insert into public.training_predictions (job_id, user_id, epoch, step, sample_index, prompt, prediction)"
          f" values ('{JOB}', '{OWNER}', 0, {{step}}, 0, 'q', 'x')")
OPERATIONS = {
    "select": f"select count(*) from public.training_predictions where job_id = '{JOB}'",
    "insert": INSERT.format(step=99),
    "update": f"update public.training_predictions set prediction = 'changed' where job_id = '{JOB}'",
    "delete": f"delete from public.training_predictions where job_id = '{JOB}'",
    # step 1 exists: the conflict turns the insert into an update of the owner's row
    "upsert": INSERT.format(step=1)
    + " on conflict (job_id, step, sample_index) do update set prediction = excluded.prediction",
}

# The owner's job has 2 rows; another user has a row of their own in another job. Each operation
# targets the owner's job. The policies are the platform's: a user selects, inserts and deletes
# their own rows; nobody but the service role updates. identity → operation → expected: "denied", or the rows seen / affected.
MATRIX = [
    ("anon", "select", "denied"),
    ("anon", "insert", "denied"),
    ("anon", "update", "denied"),
    ("anon", "delete", "denied"),
    ("anon", "upsert", "denied"),
    ("owner", "select", 2),
    ("owner", "insert", 1),  # the platform's "Users can create their own predictions"
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


@pytest.fixture(scope="module")
def seeded(postgres_server):
    """One migrated database for the module: the owner's job has 2 rows, the other user 1 row.

    Every test works inside a transaction that is rolled back, so the rows stay as seeded.
    """
    name = f"test_rls_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = postgres_server.url(name)
    apply_migrations(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for step, user in ((1, OWNER), (2, OWNER), (1, OTHER)):
            job = JOB if user == OWNER else "44444444-4444-4444-8444-444444444444"
            conn.execute("insert into public.training_predictions (job_id, user_id, epoch, step, sample_index,"
                         " prompt, prediction) values (%s, %s, 0, %s, 0, 'q', 'p')", (job, user, step))
    yield url
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@contextlib.contextmanager
def rolled_back(url: str):
    """A connection inside a transaction that is always rolled back."""
    with psycopg.connect(url) as conn:
        try:
            yield conn
        finally:
            conn.rollback()


@pytest.mark.parametrize("identity, operation, expected", MATRIX)
def test_identity_operation(seeded, identity, operation, expected):
    role, sub = IDENTITIES[identity]
    with rolled_back(seeded) as conn:
        conn.execute(f"set local role {role}")
        claims = {"sub": sub, "role": role} if sub else {"role": role}
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        if expected == "denied":
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(OPERATIONS[operation])
            return
        cur = conn.execute(OPERATIONS[operation])
        seen = cur.fetchone()[0] if operation == "select" else cur.rowcount
        assert seen == expected


def test_switched_roles_are_not_superusers_so_the_policies_apply(seeded):
    # The tests connect as a superuser, which bypasses RLS; `set local role` must not keep that.
    with rolled_back(seeded) as conn:
        for role in ("anon", "authenticated", "service_role"):
            conn.execute(f"set local role {role}")
            assert conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone() == (False,)
            assert conn.execute("select current_setting('is_superuser')").fetchone() == ("off",)


@pytest.mark.parametrize("setting, value", [
    ("request.jwt.claims", json.dumps({"sub": OWNER, "role": "authenticated"})),  # PostgREST 9+
    ("request.jwt.claim.sub", OWNER),  # older PostgREST: one setting per claim
])
def test_auth_uid_reads_the_claims_as_postgrest_sets_them(seeded, setting, value):
    with rolled_back(seeded) as conn:
        conn.execute("set local role authenticated")
        assert conn.execute("select auth.uid()").fetchone() == (None,)  # no claims: no one
        conn.execute("select set_config(%s, %s, true)", (setting, value))
        assert str(conn.execute("select auth.uid()").fetchone()[0]) == OWNER
        assert conn.execute("select count(*) from public.training_predictions").fetchone() == (2,)
