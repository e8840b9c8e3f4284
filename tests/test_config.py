"""Config files plus environment variables, and the errors a typo gets."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from agent import config as agent_config
from coordinator import config as coordinator_config
from shared.config import ConfigError


def test_file_then_environment_then_command_line(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('port = 9000\nhost = "0.0.0.0"\nlog_level = "debug"\nheartbeat_interval = 2\n')
    env = {"PVESPHERE_PORT": "9100", "PVESPHERE_READY_REQUIRES_AGENTS": "yes"}
    cfg = coordinator_config.load_config(
        coordinator_config.CoordinatorConfig, cfg_file, "PVESPHERE_", env=env, overrides={"host": "10.0.0.1"}
    )
    assert cfg.port == 9100  # env beats the file
    assert cfg.host == "10.0.0.1"  # command line beats both
    assert cfg.log_level == "debug"
    assert cfg.heartbeat_interval == 2.0
    assert cfg.ready_requires_agents is True


def test_default_database_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    cfg = coordinator_config.CoordinatorConfig(data_dir=tmp_path)
    assert cfg.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path}/coordinator.db"


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ("prot = 1\n", {}, "unknown setting 'prot'"),
        ("port = 'eighty'\n", {}, "port"),
        ("", {"PVESPHERE_PORT": "x"}, "$PVESPHERE_PORT"),
        ("", {"PVESPHERE_READY_REQUIRES_AGENTS": "perhaps"}, "expected true/false"),
        ("port = [\n", {}, "not valid TOML"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, env: dict[str, str], needle: str) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(text)
    with pytest.raises(ConfigError) as err:
        coordinator_config.load_config(coordinator_config.CoordinatorConfig, cfg_file, "PVESPHERE_", env=env)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("upload_idle_timeout = 0\n", "upload_idle_timeout must be more than 0 seconds"),
        ("max_uploads_per_token = 0\n", "max_uploads_per_token must be at least 1"),
        ("max_upload_rate = -1\n", "max_upload_rate must be 0 (no cap) or a number of bytes per second"),
        ('data_plane = "plain"\n', "data_plane must be 'tls' or 'insecure' (got 'plain')"),
    ],
)
def test_upload_limits_out_of_range_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, needle: str
) -> None:
    for name in [k for k in os.environ if k.startswith("PVESPHERE_")]:
        monkeypatch.delenv(name)
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(text)
    with pytest.raises(ConfigError) as err:
        coordinator_config.load(cfg_file)
    assert needle in str(err.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        coordinator_config.load(tmp_path / "nope.toml")


def test_agent_needs_coordinator_and_complete_https_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("PVESPHERE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PVESPHERE_AGENT_CONFIG", str(tmp_path / "missing.toml"))
    cfg_file = tmp_path / "a.toml"
    cfg_file.write_text('node = "pve1"\n')
    with pytest.raises(ConfigError, match="coordinator_url"):
        agent_config.load(cfg_file)
    cfg_file.write_text('coordinator_url = "https://c:8443"\npve_backend = "https"\n')
    with pytest.raises(ConfigError, match="pve_api_url"):
        agent_config.load(cfg_file)
    cfg_file.write_text('coordinator_url = "https://c:8443"\npve_backend = "ssh"\n')
    with pytest.raises(ConfigError, match="'local' or 'https'"):
        agent_config.load(cfg_file)


@pytest.mark.parametrize("setting", ["coordinator_url", "advertise_url"])
def test_agent_urls_must_be_https(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    for name in [k for k in os.environ if k.startswith("PVESPHERE_")]:
        monkeypatch.delenv(name)
    cfg_file = tmp_path / "a.toml"
    settings = {"coordinator_url": '"https://c:8443"', setting: '"http://pve1:8090"'}
    cfg_file.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
    with pytest.raises(ConfigError, match=f"{setting} must be an https:// URL"):
        agent_config.load(cfg_file)


def test_agent_download_hosts_are_an_allowlist_checked_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith("PVESPHERE_")]:
        monkeypatch.delenv(name)
    cfg_file = tmp_path / "a.toml"
    cfg_file.write_text('coordinator_url = "https://c:8443"\n')
    assert "cloud-images.ubuntu.com" in agent_config.load(cfg_file).download_hosts
    monkeypatch.setenv("PVESPHERE_AGENT_DOWNLOAD_HOSTS", "mirror.example.org, *.example.net, 10.0.0.5")
    assert agent_config.load(cfg_file).download_hosts == "mirror.example.org, *.example.net, 10.0.0.5"
    monkeypatch.setenv("PVESPHERE_AGENT_DOWNLOAD_HOSTS", "mirror.example.org, https://x/")
    with pytest.raises(ConfigError, match="download_hosts: 'https://x/'"):
        agent_config.load(cfg_file)


def test_agent_tls_defaults_are_the_nodes_own_certificate_and_cluster_ca() -> None:
    cfg = agent_config.AgentConfig(port=8090)
    assert cfg.tls_cert_file == Path("/etc/pve/local/pve-ssl.pem")
    assert cfg.tls_key_file == Path("/etc/pve/local/pve-ssl.key")
    assert cfg.tls_ca_file == Path("/etc/pve/pve-root-ca.pem")
    assert cfg.coordinator_ca_file is None  # the system's trust store
    assert cfg.url.startswith("https://") and cfg.url.endswith(":8090")


def test_coordinator_https_needs_both_certificate_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [k for k in os.environ if k.startswith("PVESPHERE_")]:
        monkeypatch.delenv(name)
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('tls_cert_file = "/etc/pvesphere/tls/coordinator.pem"\n')
    with pytest.raises(ConfigError, match="tls_cert_file and tls_key_file are set together"):
        coordinator_config.load(cfg_file)


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "join.token"
    secret.write_text("s3cret\n")
    cfg = agent_config.AgentConfig(join_token_file=secret)
    assert cfg.resolved_join_token() == "s3cret"
    assert agent_config.AgentConfig(join_token="inline").resolved_join_token() == "inline"
    with pytest.raises(ConfigError, match="join_token is not set"):
        agent_config.AgentConfig().resolved_join_token()


def test_the_example_configs_are_valid_and_say_what_the_defaults_are(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("PVESPHERE_")]:
        monkeypatch.delenv(name)
    examples = Path(__file__).parent.parent / "config"
    coordinator = coordinator_config.load(examples / "coordinator.example.toml")
    assert coordinator.max_inbound_per_node == coordinator_config.CoordinatorConfig.max_inbound_per_node
    assert coordinator.max_upload_bytes == 50 << 30
    defaults = coordinator_config.CoordinatorConfig()
    assert (
        coordinator.max_uploads_per_token,
        coordinator.upload_idle_timeout,
        coordinator.max_upload_rate,
    ) == (
        defaults.max_uploads_per_token,
        defaults.upload_idle_timeout,
        defaults.max_upload_rate,
    )
    agent = agent_config.load(examples / "agent.example.toml")
    assert agent.pve_backend == "local" and agent.max_send_rate == 0
    assert (agent.tls_cert_file, agent.tls_ca_file) == (
        agent_config.AgentConfig.tls_cert_file,
        agent_config.AgentConfig.tls_ca_file,
    )
    assert (
        coordinator.port == 8443
        and coordinator.tls_cert_file is not None
        and coordinator.plain_http_port == 0
    )
    assert coordinator.data_plane == defaults.data_plane == "tls"


@pytest.mark.parametrize("budget", ["lots", "0%", "150%", "-1G"])
def test_a_bad_staging_budget_stops_the_agent_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: str
) -> None:
    for name in [k for k in os.environ if k.startswith("PVESPHERE_")]:
        monkeypatch.delenv(name)
    cfg_file = tmp_path / "a.toml"
    cfg_file.write_text(f'coordinator_url = "https://c:8443"\nstaging_budget = "{budget}"\n')
    with pytest.raises(ConfigError, match=f"staging_budget '{re.escape(budget)}'"):
        agent_config.load(cfg_file)
    cfg_file.write_text('coordinator_url = "https://c:8443"\nstaging_budget = 1073741824\n')
    assert agent_config.load(cfg_file).budget.limit(0) == 1 << 30
    cfg_file.write_text('coordinator_url = "https://c:8443"\n')
    assert agent_config.load(cfg_file).budget.limit(1000) == 200  # the default: 20%


def test_log_format_comes_from_the_file_or_the_environment_and_is_checked(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('log_format = "json"\n')
    assert coordinator_config.load(cfg_file).log_format == "json"
    assert coordinator_config.load(cfg_file, log_format="text").log_format == "text"
    agent_env = {"PVESPHERE_AGENT_LOG_FORMAT": "json"}
    agent = agent_config.load_config(agent_config.AgentConfig, None, "PVESPHERE_AGENT_", env=agent_env)
    assert agent.log_format == "json"
    cfg_file.write_text('log_format = "yaml"\n')
    with pytest.raises(ConfigError, match="log_format must be one of 'text', 'json' \\(got 'yaml'\\)"):
        coordinator_config.load(cfg_file)
    agent_file = tmp_path / "a.toml"
    agent_file.write_text('coordinator_url = "https://c:8443"\nlog_format = "xml"\n')
    with pytest.raises(ConfigError, match="log_format"):
        agent_config.load(agent_file)
