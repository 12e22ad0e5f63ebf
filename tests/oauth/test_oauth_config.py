"""FLUX_MCP_OAUTH_ISSUER, FLUX_MCP_PUBLIC_URL and FLUX_MCP_OAUTH_SCOPES: what is accepted, and
the error naming the variable for what is not (before anything starts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_server.config import DEFAULT_OAUTH_SCOPES, Config, ConfigError, load_config

ISSUER = "https://sso.example.com/realms/team"
PUBLIC = "https://images.example.com/mcp"
HTTP = ["--transport", "streamable-http"]


def _config(*argv: str, **env: str) -> Config:
    return load_config([*HTTP, *argv], {"FLUX_OUTPUT_DIR": "/tmp/out", **env})


def test_oauth_settings_from_the_environment_and_flags() -> None:
    config = load_config(
        [*HTTP, "--host", "0.0.0.0"],
        {
            "FLUX_OUTPUT_DIR": "/tmp/out",
            "FLUX_MCP_OAUTH_ISSUER": ISSUER,
            "FLUX_MCP_PUBLIC_URL": "HTTPS://Images.Example.com/mcp",
        },
    )
    # Serving on all interfaces with OAuth alone is allowed: tokens are required there.
    assert config.oauth and config.auth_token is None
    assert config.oauth_issuer == ISSUER
    assert config.public_url == PUBLIC  # scheme and host in their canonical case
    assert config.oauth_scopes == DEFAULT_OAUTH_SCOPES == ("flux:generate",)
    flagged = load_config(
        [*HTTP, "--oauth-issuer", ISSUER, "--public-url", PUBLIC, "--oauth-scopes", "a b a"],
        {"FLUX_OUTPUT_DIR": "/tmp/out"},
    )
    assert flagged.oauth_scopes == ("a", "b")
    none = load_config([], {"FLUX_OUTPUT_DIR": "/tmp/out", "FLUX_MCP_OAUTH_SCOPES": "none"})
    assert none.oauth_scopes == () and not none.oauth
    # http is for loopback only (an authorization server run for tests).
    local = load_config(
        [],
        {
            "FLUX_OUTPUT_DIR": "/tmp/out",
            "FLUX_MCP_OAUTH_ISSUER": "http://127.0.0.1:9000",
            "FLUX_MCP_PUBLIC_URL": "http://localhost:8000/mcp",
        },
    )
    assert local.oauth


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"FLUX_MCP_OAUTH_ISSUER": ISSUER}, ["FLUX_MCP_OAUTH_ISSUER", "FLUX_MCP_PUBLIC_URL"]),
        ({"FLUX_MCP_PUBLIC_URL": PUBLIC}, ["FLUX_MCP_PUBLIC_URL", "FLUX_MCP_OAUTH_ISSUER"]),
        (
            {"FLUX_MCP_OAUTH_ISSUER": "http://sso.example.com", "FLUX_MCP_PUBLIC_URL": PUBLIC},
            ["FLUX_MCP_OAUTH_ISSUER", "https", "loopback"],
        ),
        (
            {"FLUX_MCP_OAUTH_ISSUER": ISSUER, "FLUX_MCP_PUBLIC_URL": "http://images.example.com"},
            ["FLUX_MCP_PUBLIC_URL", "https"],
        ),
        (
            {"FLUX_MCP_OAUTH_ISSUER": ISSUER, "FLUX_MCP_PUBLIC_URL": "images.example.com/mcp"},
            ["FLUX_MCP_PUBLIC_URL", "absolute"],
        ),
        (
            {"FLUX_MCP_OAUTH_ISSUER": ISSUER, "FLUX_MCP_PUBLIC_URL": PUBLIC + "#frag"},
            ["FLUX_MCP_PUBLIC_URL", "fragment"],
        ),
        (
            {"FLUX_MCP_OAUTH_ISSUER": ISSUER + "?tenant=1", "FLUX_MCP_PUBLIC_URL": PUBLIC},
            ["FLUX_MCP_OAUTH_ISSUER", "query"],
        ),
        (
            {
                "FLUX_MCP_OAUTH_ISSUER": ISSUER,
                "FLUX_MCP_PUBLIC_URL": PUBLIC,
                "FLUX_MCP_OAUTH_SCOPES": 'flux:generate "quoted"',
            },
            ["FLUX_MCP_OAUTH_SCOPES", "'\"quoted\"'"],
        ),
    ],
)
def test_a_wrong_setting_is_named(env: dict[str, str], words: list[str]) -> None:
    with pytest.raises(ConfigError) as refused:
        _config(**env)
    for word in words:
        assert word in str(refused.value)


def test_behind_a_proxy_on_this_machine_the_public_host_is_accepted() -> None:
    # DNS-rebinding protection on loopback checks the Host header: the proxy forwards the
    # public one.
    from mcp_server.http import http_options

    config = load_config(
        [*HTTP],
        {
            "FLUX_OUTPUT_DIR": "/tmp/out",
            "FLUX_MCP_OAUTH_ISSUER": ISSUER,
            "FLUX_MCP_PUBLIC_URL": PUBLIC,
        },
    )
    options = http_options(config)
    assert "images.example.com" in options.allowed_hosts
    assert "https://images.example.com" in options.allowed_origins
    assert "127.0.0.1:*" in options.allowed_hosts


def test_off_loopback_some_authentication_is_required() -> None:
    with pytest.raises(ConfigError) as refused:
        _config("--host", "0.0.0.0")
    message = str(refused.value)
    assert "FLUX_MCP_OAUTH_ISSUER" in message and "FLUX_MCP_AUTH_TOKEN" in message


def test_a_wrong_setting_stops_the_server_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "REPLICATE_"))}
    done = subprocess.run(
        [sys.executable, "-m", "mcp_server", *HTTP, "--host", "0.0.0.0"],
        env={
            **env,
            "FLUX_OUTPUT_DIR": str(tmp_path),
            "FLUX_MCP_OAUTH_ISSUER": "http://sso.example.com",
            "FLUX_MCP_PUBLIC_URL": PUBLIC,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("flux-mcp: FLUX_MCP_OAUTH_ISSUER=")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_the_settings_of_people_on_a_team_server(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    config = _config(
        FLUX_MCP_USER_BUDGET_USD="$2.50",
        FLUX_MCP_AUDIT_LOG=str(audit),
        FLUX_MCP_LINK_SECRET="s" * 32,
        FLUX_MCP_LINK_TTL="12h",
    )
    assert config.user_budget_usd == 2.5 and config.audit_log == audit
    assert config.link_ttl == 12 * 3600 and config.link_secret == "s" * 32
    assert "s" * 32 not in repr(config)  # the key stays out of the repr (and so of logs)
    default = _config()
    assert default.user_budget_usd is None and default.audit_log is None
    assert default.link_ttl == 7 * 86400 and default.link_secret is None
    assert _config(FLUX_MCP_LINK_TTL="90").link_ttl == 90


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("FLUX_MCP_USER_BUDGET_USD", "ten", ["FLUX_MCP_USER_BUDGET_USD", "25 or 0.50"]),
        ("FLUX_MCP_USER_BUDGET_USD", "-1", ["FLUX_MCP_USER_BUDGET_USD"]),
        ("FLUX_MCP_LINK_TTL", "a week", ["FLUX_MCP_LINK_TTL", "7d"]),
        ("FLUX_MCP_LINK_TTL", "400d", ["FLUX_MCP_LINK_TTL", "between"]),
        ("FLUX_MCP_LINK_SECRET", "tiny-key", ["FLUX_MCP_LINK_SECRET", "32", "every replica"]),
        ("FLUX_MCP_AUDIT_LOG", "audit.jsonl", ["FLUX_MCP_AUDIT_LOG", "relative"]),
        ("FLUX_MCP_AUDIT_LOG", "/nonexistent-folder/audit.jsonl", ["does not exist"]),
        ("FLUX_MCP_AUDIT_LOG", "/tmp", ["FLUX_MCP_AUDIT_LOG", "folder"]),
    ],
)
def test_a_wrong_people_setting_is_named(name: str, value: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as refused:
        _config(**{name: value})
    for word in words:
        assert word in str(refused.value)
    if name == "FLUX_MCP_LINK_SECRET":
        assert value not in str(refused.value)
