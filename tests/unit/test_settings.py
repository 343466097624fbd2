"""Settings: one clear line naming the variable; secrets never rendered."""
import pytest

from okta_flex_sync.settings import ConfigError, Settings, load_settings

GOOD = {
    "OKTA_ORG_URL": "https://acme.okta.com",
    "OKTA_API_TOKEN": "00FAKE-okta-token-do-not-leak-7f3a9c",
    "OKTA_FLEX_APP_ID": "0oa1b2c3d4e5f6g7h8i9",
    "TWILIO_ACCOUNT_SID": "AC" + "a" * 32,
    "TWILIO_AUTH_TOKEN": "fake0auth0token0do0not0leak00a1b2",
    "TWILIO_WORKSPACE_SID": "WS" + "b" * 32,
}


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for k in list(GOOD) + ["DATABASE_URL", "ROLE_SOURCE", "VALID_ROLES", "TWILIO_API_KEY_SID",
                           "TWILIO_API_KEY_SECRET", "OKTA_CLIENT_ID", "OKTA_PRIVATE_KEY", "HTTP_TIMEOUT_SECONDS",
                           "TASKROUTER_BASE_URL", "OKTA_PRIVATE_KEY_FILE", "SHRINK_GUARD_PERCENT",
                           "ALLOW_INSECURE_HTTP"]:
        monkeypatch.delenv(k, raising=False)

    def set_(**values):
        for k, v in {**GOOD, **values}.items():
            if v is None:
                monkeypatch.delenv(k, raising=False)
            else:
                monkeypatch.setenv(k, v)

    return set_


def test_valid_settings_load_and_hide_secrets(env):
    env()
    s = load_settings()
    s.require_sources()
    assert s.database_url == "sqlite:///okta_flex_sync.db"
    assert s.taskrouter_base_url == "https://taskrouter.twilio.com"
    assert s.valid_role_set == {"agent", "admin", "supervisor"}
    assert GOOD["OKTA_API_TOKEN"] not in repr(s) and GOOD["TWILIO_AUTH_TOKEN"] not in repr(s)
    assert GOOD["OKTA_API_TOKEN"] not in str(s.model_dump())


@pytest.mark.parametrize("var,value,needle", [
    ("OKTA_ORG_URL", "acme.okta.com", "OKTA_ORG_URL"),
    ("OKTA_ORG_URL", "http://acme.okta.com", "OKTA_ORG_URL"),
    ("TWILIO_ACCOUNT_SID", "AC123", "TWILIO_ACCOUNT_SID"),
    ("TWILIO_WORKSPACE_SID", "WSnothex" + "z" * 26, "TWILIO_WORKSPACE_SID"),
    ("TWILIO_API_KEY_SID", "XX" + "0" * 32, "TWILIO_API_KEY_SID"),
    ("OKTA_FLEX_APP_ID", "bad id/../", "OKTA_FLEX_APP_ID"),
    ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
    ("ROLE_SOURCE", "groups", "ROLE_SOURCE"),
    ("VALID_ROLES", " , ", "VALID_ROLES"),
    ("HTTP_TIMEOUT_SECONDS", "-1", "HTTP_TIMEOUT_SECONDS"),
    ("SHRINK_GUARD_PERCENT", "lots", "SHRINK_GUARD_PERCENT"),
    ("TASKROUTER_BASE_URL", "ftp://x", "TASKROUTER_BASE_URL"),
])
def test_malformed_setting_is_one_line_naming_the_variable(env, var, value, needle):
    env(**{var: value})
    with pytest.raises(ConfigError) as exc:
        load_settings()
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg
    assert GOOD["OKTA_API_TOKEN"] not in msg and GOOD["TWILIO_AUTH_TOKEN"] not in msg


@pytest.mark.parametrize("missing,needle", [
    ("OKTA_ORG_URL", "OKTA_ORG_URL"),
    ("OKTA_API_TOKEN", "OKTA_API_TOKEN"),
    ("OKTA_FLEX_APP_ID", "OKTA_FLEX_APP_ID"),
    ("TWILIO_ACCOUNT_SID", "TWILIO_ACCOUNT_SID"),
    ("TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN"),
    ("TWILIO_WORKSPACE_SID", "TWILIO_WORKSPACE_SID"),
])
def test_missing_required_setting_names_it(env, missing, needle):
    env(**{missing: None})
    s = load_settings()
    with pytest.raises(ConfigError) as exc:
        s.require_sources()
    assert str(exc.value).startswith(f"configuration error: {needle}")


def test_api_key_replaces_auth_token_and_oauth_replaces_token(env):
    env(TWILIO_AUTH_TOKEN=None, TWILIO_API_KEY_SID="SK" + "c" * 32, TWILIO_API_KEY_SECRET="s3cret-key-value",
        OKTA_API_TOKEN=None, OKTA_CLIENT_ID="0oaclient", OKTA_PRIVATE_KEY="-----BEGIN PRIVATE KEY-----\nx\n")
    s = load_settings()
    s.require_sources()
    assert "s3cret-key-value" in s.secret_values()


def test_dotenv_file_is_read(env, tmp_path):
    env(OKTA_FLEX_APP_ID=None)
    (tmp_path / ".env").write_text("OKTA_FLEX_APP_ID=0oaFromDotEnv\nDATABASE_URL=postgresql://u@h/db\n")
    s = load_settings()
    assert s.okta_flex_app_id == "0oaFromDotEnv"
    assert s.database_url == "postgresql+psycopg://u@h/db"


def test_settings_object_is_typed():
    assert Settings.model_fields["max_changes"].annotation is int


@pytest.mark.parametrize("okta, taskrouter, allow, expected", [
    ("http://127.0.0.1:8080", "http://localhost:9000", None, ("http://127.0.0.1:8080", "http://localhost:9000")),
    ("http://[::1]:8080/", "http://127.0.0.2:9000/v1/", None, ("http://[::1]:8080", "http://127.0.0.2:9000")),
    ("https://acme.okta.com/api/v1", "https://taskrouter.twilio.com/v1", None,
     ("https://acme.okta.com", "https://taskrouter.twilio.com")),  # pasted API paths are dropped
    ("http://okta-mock:8080", "http://10.0.0.7:9000", "true", ("http://okta-mock:8080", "http://10.0.0.7:9000")),
])
def test_base_urls_accepted(env, okta, taskrouter, allow, expected):
    env(OKTA_ORG_URL=okta, TASKROUTER_BASE_URL=taskrouter, **({"ALLOW_INSECURE_HTTP": allow} if allow else {}))
    s = load_settings()
    assert (s.okta_org_url, s.taskrouter_base_url) == expected


@pytest.mark.parametrize("var, value", [
    ("OKTA_ORG_URL", "http://okta-mock:8080"),
    ("OKTA_ORG_URL", "http://localhost.evil.example"),
    ("OKTA_ORG_URL", "http://localhost:80@evil.example"),  # user info, not the host
    ("TASKROUTER_BASE_URL", "http://10.0.0.7:9000"),
])
def test_plain_http_off_this_machine_needs_the_opt_in(env, var, value):
    env(**{var: value})
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert var in str(exc.value) and "ALLOW_INSECURE_HTTP=true" in str(exc.value)


def test_every_setting_is_in_the_readme_configuration_table():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("## Configuration"):readme.index("## CLI reference")]
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in table]
    assert missing == []
