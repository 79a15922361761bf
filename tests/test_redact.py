"""trainer/redact.py and the places that print what an operator set: the startup report's URLs,
a database URL whose password breaks the URL, keys pasted with a line break, and a server's text
that quotes our headers. A canary in every secret; none may be printed."""

from __future__ import annotations

import io

import httpx
import pytest
from rich.console import Console

from trainer.config.errors import ConfigError
from trainer.config.load import load_config
from trainer.pod.platform import RejectedCallError, _post
from trainer.pod.report import print_report
from trainer.redact import hide

CANARY = "CANARY5ec7"
OWNER = "11111111-1111-4111-8111-111111111111"


def test_hide_covers_a_secrets_escaped_form_and_each_part_of_a_password_around_an_at():
    key = f"sb_secret_{CANARY}key\n"
    assert CANARY not in hide(f"Illegal header value b'Bearer {key!r}'", key)
    url = f"postgresql://postgres:{CANARY}a@{CANARY}b@127.0.0.1:5432/db"
    printed = hide(f"failed to resolve host '{CANARY}b@127.0.0.1'; password {CANARY}a", url)
    assert CANARY not in printed and "127.0.0.1" in printed


def test_the_startup_report_shows_every_url_without_userinfo_or_query(job_environ):
    job_environ(
        JOB_ID="job_abc123", USER_ID=OWNER,
        SUPABASE_URL=f"https://user:{CANARY}-u@proj.supabase.co/?apikey={CANARY}-q",
        SUPABASE_SERVICE_KEY=f"sb_secret_{CANARY}-service",
        METRICS_API_URL=f"https://app:{CANARY}-mu@app.example/api/training/local/metrics?sig={CANARY}-mq",
        JOB_TOKEN=f"{CANARY}-token",
        ALERT_API_URL=f"https://app.example/api/alerts/trigger?key={CANARY}-aq",
        INTERNAL_API_KEY=f"{CANARY}-internal",
        HF_TOKEN=f"hf_{CANARY}",
    )
    out = io.StringIO()
    print_report(load_config(), 1, "cpu", "no", Console(file=out, width=400, soft_wrap=True))
    printed = out.getvalue()
    assert "https://proj.supabase.co/" in printed and "https://app.example/api/training/local/metrics" in printed
    assert "userinfo and query hidden" in printed
    assert CANARY not in printed


def test_a_key_pasted_with_its_line_break_is_stripped_and_one_with_a_break_inside_is_refused_unshown(job_environ):
    job_environ(JOB_ID="j", USER_ID=OWNER, SUPABASE_URL="https://proj.supabase.co",
                SUPABASE_SERVICE_KEY=f"sb_secret_{CANARY}\n")
    assert load_config().secrets.supabase_service_key.get_secret_value() == f"sb_secret_{CANARY}"
    job_environ(JOB_ID="j", USER_ID=OWNER, SUPABASE_URL="https://proj.supabase.co",
                SUPABASE_SERVICE_KEY=f"sb_secret_{CANARY}\nsb_secret_{CANARY}")
    with pytest.raises(ConfigError) as e:
        load_config()
    assert e.value.variable == "SUPABASE_SERVICE_KEY" and "line break" in str(e.value)
    assert CANARY not in str(e.value)


def test_a_database_password_with_an_unencoded_at_is_refused_naming_the_variable_and_the_fix(job_environ):
    job_environ(JOB_ID="j", USER_ID=OWNER, SUPABASE_DB_URL=f"postgresql://postgres:{CANARY}@x@127.0.0.1:5432/db")
    with pytest.raises(ConfigError) as e:
        load_config()
    assert e.value.variable == "SUPABASE_DB_URL" and "%40" in str(e.value)
    assert CANARY not in str(e.value)


def test_a_platform_route_echoing_our_authorization_is_printed_without_it():
    token = f"{CANARY}-job-token"

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": f"bad token: {request.headers['authorization']}",
                                         "key": request.headers.get("x-api-key")})

    with httpx.Client(transport=httpx.MockTransport(echo)) as client, pytest.raises(RejectedCallError) as e:
        _post(client, "https://app.example/api/training/local/metrics", {"job_id": "j"},
              {"Authorization": f"Bearer {token}", "X-API-Key": f"{CANARY}-internal"})
    assert "HTTP 401" in str(e.value) and CANARY not in str(e.value)


def test_migrate_refuses_a_database_password_with_an_unencoded_at_before_connecting(caplog):
    from predictions.store.delivery import migrate_command
    from trainer.config.exits import EXIT_CONFIG

    caplog.set_level("INFO")
    assert migrate_command(f"postgresql://postgres:{CANARY}@x@127.0.0.1:9/db") == EXIT_CONFIG
    assert "%40" in caplog.text and CANARY not in caplog.text
