from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from knm.core.settings import Settings

DIGEST = hashlib.sha256(b"a token").hexdigest()


def test_audit_token_hashes_are_read_comma_separated_and_lowercased(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = hashlib.sha256(b"another").hexdigest()
    monkeypatch.setenv("KNM_AUDIT_TOKEN_HASHES", f" {DIGEST.upper()} ,{other},")
    assert Settings().audit_token_hashes == [DIGEST, other]


def test_no_token_hashes_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KNM_AUDIT_TOKEN_HASHES", raising=False)
    assert Settings().audit_token_hashes == []


@pytest.mark.parametrize("value", ["s3cret-value", DIGEST[:-1], DIGEST + "0", "z" * 64])
def test_what_is_not_a_sha256_digest_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("KNM_AUDIT_TOKEN_HASHES", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    (error,) = caught.value.errors()
    assert "SHA-256 digest" in error["msg"]
    assert value not in error["msg"]


def test_public_pools_default_to_the_original_managers_and_are_comma_separated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KNM_PUBLIC_POOLS", raising=False)
    assert [str(pool) for pool in Settings().network().public_pools] == ["10.1.0.0/16"]
    monkeypatch.setenv("KNM_PUBLIC_POOLS", "203.0.113.0/24, 198.51.100.0/24")
    assert [str(pool) for pool in Settings().network().public_pools] == [
        "203.0.113.0/24",
        "198.51.100.0/24",
    ]


def test_a_public_pool_overlapping_another_pool_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNM_PUBLIC_POOLS", "10.254.3.0/24")
    with pytest.raises(ValueError, match="overlap"):
        Settings().network()
