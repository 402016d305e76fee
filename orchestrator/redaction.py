"""Keep secrets out of what gets logged: tokens, passwords and keys in configs and text.

A value is redacted when its *key* names a secret (``token``, ``password``,
``api_key``, ``client_secret``, ...) or when the *value itself* looks like one
(a Databricks/GitHub/AWS/Slack token, a JWT, a PEM private key, the password of
a URL such as ``https://user:pass@host``, ``password=...`` in a connection
string, or a long random-looking string). Keys that merely contain the word
"key" as a data term (``lookup_key``, ``primary_keys``, ``key_column``) are not
secrets and are kept.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "is_secret_key", "looks_like_secret", "redact", "redact_text"]

REDACTED = "***REDACTED***"

# Key names (split into words on _, -, ., space and camelCase) that hold secrets.
_SECRET_WORDS = {"token", "tokens", "password", "passwd", "pwd", "secret", "secrets",
                 "credential", "credentials", "apikey", "passphrase", "sas", "pat",
                 "authorization", "auth", "bearer", "cookie", "signature", "privatekey"}
# Two-word names: "api_key", "access_key", "private_key", "secret_key", "account_key", ...
_SECRET_KEY_QUALIFIERS = {"api", "access", "private", "secret", "account", "client", "signing",
                          "encryption", "master", "storage", "subscription", "sas", "shared"}
_CONNECTION_STRING_WORDS = ("connection", "string")

_VALUE_PATTERNS = [
    re.compile(r"\bdapi[0-9a-f]{32}(-\d+)?\b"),                       # Databricks PAT
    re.compile(r"\bdose[0-9a-f]{32}\b"),                              # Databricks OAuth secret
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),                    # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{40,}\b"),
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),                       # AWS access key id
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),                  # Slack
    re.compile(r"\bsk-[A-Za-z0-9_-]{20,}\b"),                         # OpenAI-style keys
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),                         # Google API key
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),  # JWT
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)",
               re.DOTALL),
]
# "Bearer abc...", "password=abc;", "AccountKey=...;", "sig=..." inside longer text.
_INLINE_SECRET = re.compile(
    r"(?i)\b(bearer\s+|(?:password|passwd|pwd|token|secret|accountkey|sharedaccesskey|"
    r"client_secret|api_key|apikey|access_key|sig)\s*[=:]\s*)([^\s;&,'\"]+)")
# The password of a URL: scheme://user:password@host
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)([^@\s/]+)(@)")
# A long run of token characters; judged random-looking by _high_entropy.
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9+/_=-]{32,}")


def _words(key: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key)
    return [w for w in re.split(r"[\s_.\-/:]+", spaced.lower()) if w]


def is_secret_key(key: object) -> bool:
    """Whether a config key names a secret.

    Examples
    --------
    >>> is_secret_key("databricks_token"), is_secret_key("api_key"), is_secret_key("lookup_key")
    (True, True, False)
    """
    if not isinstance(key, str):
        return False
    words = _words(key)
    if not words:
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    for first, second in zip(words, words[1:]):
        if second in {"key", "keys"} and first in _SECRET_KEY_QUALIFIERS:
            return True
        if (first, second) == _CONNECTION_STRING_WORDS:
            return True
    return False


def _char_class(char: str) -> str:
    if char.islower():
        return "lower"
    if char.isupper():
        return "upper"
    return "digit" if char.isdigit() else "other"


def _high_entropy(text: str) -> bool:
    # Random tokens mix upper and lower case and digits, switch between them at almost every
    # other character, and carry ~4+ bits of entropy per character. Readable names
    # (snake_case, paths, dates) switch rarely, CamelCase words keep long lower-case runs,
    # and hex digests lack upper case.
    if len(text) < 32:
        return False
    classes = [c for c in map(_char_class, text) if c != "other"]
    if len(classes) < 24 or not {"lower", "upper", "digit"} <= set(classes):
        return False
    switches = sum(a != b for a, b in zip(classes, classes[1:])) / (len(classes) - 1)
    counts = Counter(text)
    entropy = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    lower_runs = [len(run) for run in re.findall(r"[a-z]+", text)]
    mean_lower_run = sum(lower_runs) / len(lower_runs)
    return switches >= 0.35 and entropy >= 4.0 and mean_lower_run <= 2.5


def looks_like_secret(value: object) -> bool:
    """Whether a value (not its key) looks like a token, password or private key.

    Examples
    --------
    >>> looks_like_secret("dapi" + "0123456789abcdef" * 2), looks_like_secret("/Shared/churn")
    (True, False)
    """
    if not isinstance(value, str):
        return False
    return redact_text(value) != value


def redact_text(text: str) -> str:
    """Replace every secret-looking part of ``text`` with ``***REDACTED***``.

    Examples
    --------
    >>> redact_text("https://alice:hunter2@db.example.com/x")
    'https://alice:***REDACTED***@db.example.com/x'
    """
    if not isinstance(text, str) or not text:
        return text
    for pattern in _VALUE_PATTERNS:
        text = pattern.sub(REDACTED, text)
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    text = _INLINE_SECRET.sub(lambda m: m.group(1) + REDACTED
                              if m.group(2) != REDACTED else m.group(0), text)
    return _TOKEN_LIKE.sub(lambda m: REDACTED if _high_entropy(m.group(0)) else m.group(0), text)


def redact(value: Any, *, key: object = None) -> Any:
    """A copy of ``value`` (nested dicts, lists, dataclasses) with every secret redacted.

    Parameters
    ----------
    value : object
        A config value: mappings, sequences, dataclasses and scalars.
    key : str, optional
        The key ``value`` is stored under; a secret-naming key redacts the
        whole value whatever it is.

    Returns
    -------
    object
        Mappings come back as dicts, sequences as lists, dataclasses as dicts;
        the input is not modified.

    Examples
    --------
    >>> redact({"host": "x", "token": "abc", "nested": [{"password": 1}]})
    {'host': 'x', 'token': '***REDACTED***', 'nested': [{'password': '***REDACTED***'}]}
    """
    if key is not None and is_secret_key(key) and value not in (None, ""):
        return REDACTED
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: redact(v, key=k) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
