"""Settings: comma-separated secrets, durations, and one clear line for a bad variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hub.core.settings import Settings, SettingsError, load_settings, parse_duration


def test_secret_lists_split_on_commas_and_stay_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "old-secret, new-secret,")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.github_webhook_secret == ("old-secret", "new-secret")
    assert "old-secret" not in repr(s)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("24h", 86400),
                                                ("14d", 14 * 86400), ("250ms", 0.25)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_variable_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_PORT", "eighty")
    monkeypatch.setenv("HUB_RETENTION", "two weeks")
    with pytest.raises(SettingsError) as e:
        load_settings(_env_file=None)
    assert "HUB_PORT" in str(e.value) and "HUB_RETENTION" in str(e.value)


def test_bad_redis_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "http://localhost:6379")
    with pytest.raises(SettingsError, match="REDIS_URL"):
        load_settings(_env_file=None)


def test_cli_exits_with_one_line_for_bad_settings(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HUB_PORT": "70000"}
    proc = subprocess.run([sys.executable, "-m", "hub", "serve"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "HUB_PORT" in lines[0]


@pytest.mark.parametrize("value", ["whsec_", "whsec_ ", "whsec_!!!!", "whsec_a", "whsec_====", "!!!!",
                                   "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,whsec_"])
def test_a_signing_secret_without_a_key_is_refused_at_start(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("INCIDENTIO_WEBHOOK_SECRET", value)
    with pytest.raises(SettingsError, match="INCIDENTIO_WEBHOOK_SECRET"):
        load_settings(_env_file=None)


def test_usable_signing_secrets_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCIDENTIO_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, plain-secret")
    assert len(load_settings(_env_file=None).incidentio_webhook_secret) == 2


@pytest.mark.parametrize("variable", ["GITHUB_WEBHOOK_SECRET", "INCIDENTIO_WEBHOOK_SECRET", "GRAFANA_WEBHOOK_SECRET",
                                      "GRAFANA_WEBHOOK_TOKEN", "DATADOG_WEBHOOK_TOKEN", "ALERTMANAGER_WEBHOOK_TOKEN",
                                      "PAGERDUTY_WEBHOOK_SECRET", "HUB_ADMIN_TOKEN"])
def test_no_rotation_list_ever_holds_an_empty_entry(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,, ,")
    values = getattr(load_settings(_env_file=None), variable.lower())
    assert values == ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",)
    monkeypatch.setenv(variable, " , ,")
    assert getattr(load_settings(_env_file=None), variable.lower()) == ()


@pytest.mark.parametrize("value", ["https://x:y", "a b:token", "alice:", ":token", "name/x:token"])
def test_admin_tokens_with_a_colon_must_be_name_token(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HUB_ADMIN_TOKEN", value)
    with pytest.raises(SettingsError, match="HUB_ADMIN_TOKEN"):
        load_settings(_env_file=None)


def test_named_admin_tokens_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_ADMIN_TOKEN", "alice:s3cret-1,bob@example.com:s3cret-2,plain-token")
    assert load_settings(_env_file=None).hub_admin_token == ("alice:s3cret-1", "bob@example.com:s3cret-2",
                                                             "plain-token")
