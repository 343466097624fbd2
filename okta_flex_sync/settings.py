"""One typed settings object, read from the environment and an optional `.env` file.

Every field maps to an upper-case environment variable of the same name; the README's
configuration table documents each one.  Secrets are `SecretStr` so they never render in
reprs, logs or errors.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_VALID_ROLES = ("agent", "admin", "supervisor")


class ConfigError(Exception):
    """A setting is missing or malformed. The message is one line naming the variable."""


_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_API_KEY_SID = re.compile(r"^SK[0-9a-fA-F]{32}$")
_WORKSPACE_SID = re.compile(r"^WS[0-9a-fA-F]{32}$")


def _check_url(value: str | None, *, strip_suffix: str = "") -> str | None:
    """A base URL without its trailing slash (and without `strip_suffix`, the API path people
    paste along with the host, e.g. `/api/v1`); http vs https is checked on the whole settings."""
    if value is None or value == "":
        return None
    value = value.strip().rstrip("/")
    if not re.match(r"^https?://[^\s/]+(:\d+)?(/[^\s]*)?$", value):
        raise ValueError("must be an http(s) URL such as https://example.okta.com")
    if strip_suffix and value.lower().endswith(strip_suffix):
        value = value[: -len(strip_suffix)]
    return value


def _is_loopback(url: str) -> bool:
    """Whether `url`'s host is this machine (`localhost`, `*.localhost`, 127.0.0.0/8, ::1)."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # --- Okta -------------------------------------------------------------------------
    okta_org_url: str | None = Field(None, description="Okta org base URL, e.g. https://acme.okta.com")
    okta_api_token: SecretStr | None = Field(None, description="Okta SSWS API token")
    okta_client_id: str | None = Field(None, description="OAuth 2.0 service app client id (instead of a token)")
    okta_private_key: SecretStr | None = Field(None, description="PEM private key for private_key_jwt")
    okta_private_key_file: Path | None = Field(None, description="Path to the PEM private key")
    okta_key_id: str | None = Field(None, description="kid of the registered public JWK")
    okta_scopes: str = "okta.users.read okta.apps.read okta.logs.read"
    okta_flex_app_id: str | None = Field(None, description="Okta app id of the Flex SAML app")

    # --- Twilio -----------------------------------------------------------------------
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_api_key_sid: str | None = None
    twilio_api_key_secret: SecretStr | None = None
    twilio_workspace_sid: str | None = None
    taskrouter_base_url: str = "https://taskrouter.twilio.com"
    allow_insecure_http: bool = False

    # --- Storage and output -----------------------------------------------------------
    database_url: str = "sqlite:///okta_flex_sync.db"
    report_dir: Path = Path("reports")

    # --- Mapping (how the SSO claims are built) -----------------------------------------
    role_source: Literal["user_type", "app_user"] = "user_type"
    valid_roles: str = ",".join(DEFAULT_VALID_ROLES)
    image_url_attribute: str = "imageUrl"

    # --- Behaviour ----------------------------------------------------------------------
    http_timeout_seconds: float = Field(30.0, gt=0, le=600)
    http_max_retries: int = Field(6, ge=0, le=20)
    okta_max_concurrency: int = Field(4, ge=1, le=64)
    okta_rate_limit_percent: int = Field(50, ge=1, le=100)
    incremental_overlap_seconds: int = Field(300, ge=0, le=86400)
    shrink_guard_percent: float = Field(20.0, ge=0, le=100)
    max_changes: int = Field(25, ge=0)
    raw_page_retention_days: int = Field(120, ge=0)
    staging_retention_runs: int = Field(14, ge=1)
    system_log_lookback_hours: int = Field(48, ge=0, le=24 * 90)
    lock_wait_seconds: float = Field(0.0, ge=0)
    # Users pages a run lands itself before handing the rest of the users listing to a landing
    # process of its own (jobs.landing); 0: from the first page; negative: never.
    landing_process_after_pages: int = 25
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("okta_org_url", mode="before")
    @classmethod
    def _org_url(cls, v):
        return _check_url(v, strip_suffix="/api/v1")

    @field_validator("taskrouter_base_url", mode="before")
    @classmethod
    def _tr_url(cls, v):
        return _check_url(v, strip_suffix="/v1") or "https://taskrouter.twilio.com"

    @field_validator("twilio_account_sid")
    @classmethod
    def _account_sid(cls, v):
        if v and not _ACCOUNT_SID.match(v):
            raise ValueError("must look like AC followed by 32 hex digits")
        return v or None

    @field_validator("twilio_api_key_sid")
    @classmethod
    def _key_sid(cls, v):
        if v and not _API_KEY_SID.match(v):
            raise ValueError("must look like SK followed by 32 hex digits")
        return v or None

    @field_validator("twilio_workspace_sid")
    @classmethod
    def _workspace_sid(cls, v):
        if v and not _WORKSPACE_SID.match(v):
            raise ValueError("must look like WS followed by 32 hex digits")
        return v or None

    @field_validator("okta_flex_app_id")
    @classmethod
    def _app_id(cls, v):
        if v and not re.match(r"^[A-Za-z0-9]{1,64}$", v):
            raise ValueError("must be an Okta app id such as 0oa1b2c3d4e5f6g7h8i9")
        return v or None

    @field_validator("valid_roles")
    @classmethod
    def _roles(cls, v: str):
        roles = [r.strip().lower() for r in v.split(",") if r.strip()]
        if not roles:
            raise ValueError("must list at least one role, e.g. agent,admin,supervisor")
        return ",".join(dict.fromkeys(roles))

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str):
        if not re.match(r"^(sqlite|postgresql|postgres)(\+\w+)?://", v or ""):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        if v.startswith("postgres://"):  # what most hosting providers hand out; SQLAlchemy wants postgresql
            v = "postgresql://" + v[len("postgres://"):]
        if v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v[len("postgresql://"):]
        return v

    @model_validator(mode="after")
    def _key_pairs(self):
        if self.okta_private_key and self.okta_private_key_file:
            raise ValueError("OKTA_PRIVATE_KEY and OKTA_PRIVATE_KEY_FILE: set only one")
        return self

    @model_validator(mode="after")
    def _https_unless_local(self):
        """Credentials travel in every request: plain http only to this machine, or where an
        admin said so (a test server on another host)."""
        for name, url in (("OKTA_ORG_URL", self.okta_org_url), ("TASKROUTER_BASE_URL", self.taskrouter_base_url)):
            if url and url.lower().startswith("http://") and not (self.allow_insecure_http or _is_loopback(url)):
                raise ValueError(f"{name} must use https:// (plain http is allowed for localhost, or for any "
                                 f"host with ALLOW_INSECURE_HTTP=true, e.g. a test server on another machine)")
        return self

    # A database password is a secret too: mask it wherever the settings are shown or dumped.
    @field_serializer("database_url")
    def _mask_db_password(self, v: str) -> str:
        return mask_url_password(v)

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, mask_url_password(value) if name == "database_url" else value

    # --- derived -----------------------------------------------------------------------
    @property
    def valid_role_set(self) -> frozenset[str]:
        return frozenset(self.valid_roles.split(","))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def secret_values(self) -> list[str]:
        """Every secret this process holds, for redaction filters."""
        out = [p for p in [_url_password(self.database_url)] if p]
        for s in (self.okta_api_token, self.twilio_auth_token, self.twilio_api_key_secret, self.okta_private_key):
            if s is not None and s.get_secret_value():
                out.append(s.get_secret_value())
        return out

    def require_sources(self) -> None:
        """Fail with one line naming the first missing variable needed to call Okta and Twilio."""
        missing = []
        if not self.okta_org_url:
            missing.append("OKTA_ORG_URL")
        if not self.okta_api_token and not self.okta_client_id:
            missing.append("OKTA_API_TOKEN (or OKTA_CLIENT_ID with OKTA_PRIVATE_KEY)")
        if self.okta_client_id and not self.okta_api_token and not (self.okta_private_key or self.okta_private_key_file):
            missing.append("OKTA_PRIVATE_KEY or OKTA_PRIVATE_KEY_FILE (for OKTA_CLIENT_ID)")
        if not self.okta_flex_app_id:
            missing.append("OKTA_FLEX_APP_ID")
        if not self.twilio_account_sid:
            missing.append("TWILIO_ACCOUNT_SID")
        if not self.twilio_auth_token and not (self.twilio_api_key_sid and self.twilio_api_key_secret):
            missing.append("TWILIO_AUTH_TOKEN (or TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET)")
        if not self.twilio_workspace_sid:
            missing.append("TWILIO_WORKSPACE_SID")
        if missing:
            raise ConfigError(f"configuration error: {missing[0]} is not set" +
                              (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""))

    def private_key_pem(self) -> str | None:
        if self.okta_private_key:
            return self.okta_private_key.get_secret_value()
        if self.okta_private_key_file:
            try:
                return self.okta_private_key_file.read_text()
            except OSError as exc:
                raise ConfigError(f"configuration error: OKTA_PRIVATE_KEY_FILE cannot be read ({exc.strerror})") from None
        return None


def _url_password(url: str) -> str | None:
    m = re.match(r"^[\w+]+://[^:/@]*:([^@]*)@", url or "")
    return m.group(1) if m and m.group(1) else None


def mask_url_password(url: str) -> str:
    """`postgresql://user:***@host/db` for display; URLs without a password are unchanged."""
    password = _url_password(url)
    return url.replace(f":{password}@", ":***@", 1) if password else url


def load_settings(**overrides) -> Settings:
    """Build Settings, turning a validation error into one line that names the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err.get("loc") or ("settings",)
        name = str(loc[0]).upper()
        msg = err.get("msg", "is invalid").removeprefix("Value error, ")
        if name == "SETTINGS" or not loc:
            raise ConfigError(f"configuration error: {msg}") from None
        raise ConfigError(f"configuration error: {name} {msg}") from None
