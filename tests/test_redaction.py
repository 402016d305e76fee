"""Secrets never leave through logged configs or text; data terms that say "key" stay."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

import pytest

from orchestrator.redaction import REDACTED, is_secret_key, looks_like_secret, redact, redact_text

DATABRICKS_PAT = "dapi" + "0f1e2d3c4b5a6978" * 2


@pytest.mark.parametrize("key", [
    "token", "databricks_token", "DATABRICKS_TOKEN", "accessToken", "password", "db_passwd",
    "pwd", "client_secret", "secret", "api_key", "apiKey", "ApiKey", "access_key",
    "aws_secret_access_key", "private_key", "storage_account_key", "credentials",
    "connection_string", "sas_token", "Authorization",
])
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", [
    "lookup_key", "primary_keys", "key_column", "timestamp_key", "keys", "partition_key",
    "tokenizer_max_features", "experiment_name", "path", "label", "monkey", "keyboard",
])
def test_data_keys_are_not_secrets(key):
    assert not is_secret_key(key)


@pytest.mark.parametrize("secret", [
    DATABRICKS_PAT,
    "ghp_" + "A1b2C3d4E5" * 4,
    "AKIAIOSFODNN7EXAMPLE",
    "xoxb-123456789012-abcdefghijkl",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
    "Zadbins7D4a8FHWuOGsmnMeeDmCpctTx6KJBlZQ5ev4",
])
def test_secret_values_are_redacted_whole(secret):
    assert looks_like_secret(secret)
    assert redact_text(f"value: {secret} end") == f"value: {REDACTED} end"


@pytest.mark.parametrize("text, expected", [
    ("postgresql://etl:s3cret@db:5432/crm", f"postgresql://etl:{REDACTED}@db:5432/crm"),
    ("Server=x;User ID=u;Password=S3cr3t!;Database=d", f"Server=x;User ID=u;Password={REDACTED};"
                                                       "Database=d"),
    ("Authorization: Bearer abc.def", f"Authorization: Bearer {REDACTED}"),
    ("https://x.blob.core.windows.net/c?sv=2022&sig=AbC%2Bd", "https://x.blob.core.windows.net/"
                                                               f"c?sv=2022&sig={REDACTED}"),
])
def test_secrets_inside_text(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize("text", [
    "/Shared/churn", "main.features.customer_churn_2024_v3", "dbfs:/mnt/raw/Churn2024/Delta",
    "s3://Bucket-Prod/Data/Churn2024/Delta/Table_V3/Part1",
    "HistGradientBoostingClassifier_MaxIter200", "preprocess__numeric_0__scaler__with_mean",
    "a3f5c2e9b1d4a3f5c2e9b1d4a3f5c2e9b1d4a3f5", "2024-01-01T00:00:00Z",
    "customer-churn-features-v2-2024-Q1-Europe_West", "sqlite:////work/mlruns/mlflow.db",
    "http://127.0.0.1:5000",
])
def test_ordinary_values_are_kept(text):
    assert redact_text(text) == text


def test_random_tokens_are_caught_by_the_entropy_backstop():
    tokens = [base64.b64encode(secrets.token_bytes(40)).decode() for _ in range(200)]
    caught = sum(redact_text(t) == REDACTED for t in tokens)
    assert caught >= 190


@dataclass(frozen=True)
class _Spec:
    host: str
    token: str


def test_redact_nested_config_without_mutating_it():
    config = {"fs": {"lookup_key": "customer_id", "token": "abc"},
              "list": [{"password": 123}, "plain", DATABRICKS_PAT],
              "spec": _Spec(host="h", token="t"),
              "empty_password": ""}
    redacted = redact(config)
    assert redacted == {"fs": {"lookup_key": "customer_id", "token": REDACTED},
                        "list": [{"password": REDACTED}, "plain", REDACTED],
                        "spec": {"host": "h", "token": REDACTED},
                        "empty_password": ""}
    assert config["fs"]["token"] == "abc"
