"""Redactor: secrets and personal data become typed placeholders; ordinary numbers stay."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import pytest

from pgtrail.writer.redact import Redactor, hash_user_id, is_secret_key

JWT_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def redact(text: str) -> str:
    return Redactor().redact_text(text)


# -- positives ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    ["jane.doe@example.com", "john+tag@mail.example.co.uk", "a_b-c%d@sub-domain.io", "x@y.de"],
)
def test_emails_are_replaced(email: str) -> None:
    assert redact(f"write to {email}, please") == "write to [EMAIL], please"


@pytest.mark.parametrize(
    "phone",
    [
        "+34 612 345 678",
        "(415) 555-0132",
        "415-555-0132",
        "415.555.0132",
        "+1 415 555 0132",
        "+1 (415) 555-0132",
        "0044 20 7946 0958",
        "+14155550132",
        "+33 6 12 34 56 78",
        "+49-30-1234567",
    ],
)
def test_phone_numbers_are_replaced(phone: str) -> None:
    assert redact(f"call {phone} today") == "call [PHONE] today"


@pytest.mark.parametrize(
    "card",
    [
        "4111 1111 1111 1111",
        "4111111111111111",
        "4242-4242-4242-4242",
        "5555555555554444",
        "378282246310005",
        "3782 822463 10005",
        "6011111111111117",
    ],
)
def test_luhn_valid_card_numbers_are_replaced(card: str) -> None:
    assert redact(f"paid with {card}.") == "paid with [CARD]."


def test_card_followed_by_cvv_keeps_the_cvv() -> None:
    assert redact("card 4111 1111 1111 1111 123 ok") == "card [CARD] 123 ok"


@pytest.mark.parametrize(
    "key",
    [
        "sk-" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V2w3X4",
        "sk-proj-" + "Ab3dEfGh1jKlMn0pQrStUvWxYz_-9876543210abcd",
        "sk-ant-api03-" + "Zx9_Yw8-Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe" + "AA",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5",
        "gho_" + "16C7e42F292c6912E7710c838347Ae178B4a",
        "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "xoxp-" + "123456789012-abcdefghij",
        "AIza" + "SyA-1234567890abcdefghijklmnopqrstu",
        "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
        "rk_live_" + "51H8pXyZ2eZvKYlo2C0a1b2c3d",
    ],
)
def test_api_keys_are_replaced(key: str) -> None:
    assert redact(f"key={key} end") == "key=[API_KEY] end"
    assert redact(f'{{"key": "{key}"}}') == '{"key": "[API_KEY]"}'


def test_bearer_token_is_replaced_and_the_scheme_kept() -> None:
    header = "Authorization: Bearer abcDEF0123456789ghiJKL.mno~pqr+stu/vwx=="
    assert redact(header) == "Authorization: Bearer [API_KEY]"
    assert redact("bearer  0123456789abcdefXYZ,") == "bearer  [API_KEY],"


def test_bearer_jwt_is_replaced_whole() -> None:
    assert redact(f"Authorization: Bearer {JWT_TOKEN}") == "Authorization: Bearer [API_KEY]"


def test_jwts_are_replaced() -> None:
    assert redact(f"token {JWT_TOKEN} expired") == "token [JWT] expired"
    assert redact(f"?jwt={JWT_TOKEN}&x=1") == "?jwt=[JWT]&x=1"


def test_every_kind_is_replaced_in_one_text_and_the_rest_kept() -> None:
    text = (
        "User jane@example.com (+34 612 345 678) paid 4111 1111 1111 1111 on 2024-01-15; "
        "agent used AKIAIOSFODNN7EXAMPLE and " + JWT_TOKEN + " for 1568 tokens at $1,234.56."
    )
    assert redact(text) == (
        "User [EMAIL] ([PHONE]) paid [CARD] on 2024-01-15; "
        "agent used [API_KEY] and [JWT] for 1568 tokens at $1,234.56."
    )


def test_many_matches_in_one_text_are_all_replaced() -> None:
    line = "key sk-proj-abc123DEF456ghi789JKL012 card 4242 4242 4242 4242 tel 415-555-0132; "
    assert redact(line * 30) == "key [API_KEY] card [CARD] tel [PHONE]; " * 30


def test_adjacent_matches_separated_by_one_character_are_both_replaced() -> None:
    assert redact("4111111111111111/4242424242424242") == "[CARD]/[CARD]"
    assert redact("415-555-0132,415-555-0133") == "[PHONE],[PHONE]"


def test_non_latin_text_around_matches_is_kept_intact() -> None:
    text = "電話 +81 3 1234 5678 と カード 4111 1111 1111 1111 🎉 mail: ünï@example.com"
    assert redact(text) == "電話 [PHONE] と カード [CARD] 🎉 mail: [EMAIL]"


# -- negatives ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "In 2024 revenue grew; see 1999 and 2025.",
        "It costs $1,234.56 or €99.99 or 1.234.567,89 EUR.",
        "Started 2024-01-15T10:30:00Z, ended 2024-01-15 10:30:00+00:00 (10:30:05.123456).",
        "Offsets +05:30 and -08:00; dates 2024/01/15 and 15.01.2024.",
        "Run 550e8400-e29b-41d4-a716-446655440000 and 12345678-1234-1234-1234-123456789012.",
        "Upgrade from 1.2.3 to 10.0.19041.1 (v2.14.3); python 3.11.7.",
        "The call used 1568 tokens (prompt 1200, completion 368) in 1532 ms.",
        "Unix time 1705314600 or 1705314600000 ms; id 20240115103000.",
        "Order ids 4111111111111112 and 1234 5678 9012 3456 fail the Luhn check.",
        "Hosts 192.168.100.200 and 10.0.0.1:5432; port 8080.",
        "Sizes 128 256 1024 and 100 200 3000; ratio 1e+10; growth +12.5%.",
        "Use sk-learn-compatible-estimator-wrapper for the task-force-management-system.",
        "He was the bearer of bad news about the Bearer authentication scheme.",
        "Mail user@localhost or @handle; a@b is not an address.",
        "Item 2+2=4 and +1 vote; 00:00:00 midnight; 007 agent.",
    ],
)
def test_ordinary_numbers_and_words_are_kept(text: str) -> None:
    assert redact(text) == text


def test_short_and_empty_texts_are_returned_as_is() -> None:
    assert redact("") == ""
    assert redact("a@b.c") == "a@b.c"


def test_key_prefix_inside_a_longer_word_is_not_a_key() -> None:
    text = "mask-" + "a1" * 15 + " and xAKIAIOSFODNN7EXAMPLE"
    assert redact(text) == text


# -- JSON --------------------------------------------------------------------------------------


def test_redact_json_walks_dicts_and_lists_and_redacts_keys_too() -> None:
    value = {
        "messages": [
            {"role": "user", "content": "I am jane@example.com, call 415-555-0132"},
            {"role": "tool", "content": ["card 4111111111111111", 42, None, True, 1.5]},
        ],
        "jane@example.com": "key redacted, value redacted: x@y.de",
    }
    assert Redactor().redact_json(value) == {
        "messages": [
            {"role": "user", "content": "I am [EMAIL], call [PHONE]"},
            {"role": "tool", "content": ["card [CARD]", 42, None, True, 1.5]},
        ],
        "[EMAIL]": "key redacted, value redacted: [EMAIL]",
    }


def test_keys_that_redact_to_the_same_placeholder_keep_every_value() -> None:
    value = {"ana@example.com": 1, "bob@example.com": 2, "[EMAIL] #2": 3}
    assert Redactor().redact_json(value) == {"[EMAIL]": 1, "[EMAIL] #2": 2, "[EMAIL] #2 #2": 3}


def test_values_under_kept_keys_are_left_as_identifiers() -> None:
    value = {"user.id": "ana@example.com", "note": "ana@example.com", "x": {"user.id": "b@c.de"}}
    assert Redactor().redact_json(value, keep=frozenset({"user.id"})) == {
        "user.id": "ana@example.com",
        "note": "[EMAIL]",
        "x": {"user.id": "b@c.de"},
    }


def test_json_text_is_redacted_as_json() -> None:
    arguments = '{"api_key": "hunter2", "to": "ana\\u0040example.com", "n": 3}'
    assert redact(arguments) == '{"api_key": "[SECRET]", "to": "[EMAIL]", "n": 3}'
    assert Redactor().redact_json({"arguments": arguments}) == {
        "arguments": '{"api_key": "[SECRET]", "to": "[EMAIL]", "n": 3}'
    }
    compact = '{"n":1,"text":"plain"}'
    assert redact(compact) == compact  # nothing to redact: its formatting is kept
    assert redact("[not json] ana@example.com") == "[not json] [EMAIL]"


def test_process_records_keep_their_ids_and_lose_their_secrets() -> None:
    record = {
        "span_id": "4111111111111111",
        "parent_span_id": None,
        "name": "send to ana@example.com",
        "nesting_level": 1,
        "started_at": "2024-01-15T10:30:00+00:00",
        "duration_ms": 5,
        "status": "error",
        "error": "ValueError: card 4111 1111 1111 1111",
    }
    (clean,) = Redactor().redact_processes([record])
    assert clean == {**record, "name": "send to [EMAIL]", "error": "ValueError: card [CARD]"}


def test_redact_json_replaces_values_of_secret_looking_keys() -> None:
    value = {
        "password": "hunter2",
        "DB_PASSWD": 1234,
        "client_secret": "abc",
        "token": "t",
        "access_token": "a",
        "refresh_token": "r",
        "apiKey": "k",
        "X-Api-Key": "k",
        "api_key": "k",
        "APIKEY": "k",
        "Authorization": "Basic dXNlcjpwYXNz",
        "private_key": {"pem": "-----BEGIN-----"},
        "secret": None,
    }
    out = Redactor().redact_json(value)
    assert out == dict.fromkeys(value, "[SECRET]") | {"secret": None}


@pytest.mark.parametrize(
    "key",
    ["max_tokens", "token_count", "tokens", "prompt_tokens", "keyboard", "password_hint", "id"],
)
def test_keys_that_only_mention_secrets_are_not_redacted(key: str) -> None:
    assert not is_secret_key(key)
    assert Redactor().redact_json({key: 1568}) == {key: 1568}


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "userPassword",
        "x-auth-token",
        "GITHUB_TOKEN",
        "aws_secret_access_key",
        "pwd_secret",
    ],
)
def test_secret_key_detection_handles_case_and_separators(key: str) -> None:
    assert is_secret_key(key)


def test_redact_json_returns_a_new_structure_and_leaves_input_alone() -> None:
    value: dict[str, Any] = {"a": ["x@y.de"], "t": ("415-555-0132", 1)}
    out = Redactor().redact_json(value)
    assert value == {"a": ["x@y.de"], "t": ("415-555-0132", 1)}
    assert out == {"a": ["[EMAIL]"], "t": ["[PHONE]", 1]}
    assert out["a"] is not value["a"]


def test_redact_json_handles_scalars_at_the_top_level() -> None:
    redactor = Redactor()
    assert redactor.redact_json("mail x@y.de") == "mail [EMAIL]"
    assert redactor.redact_json(4111111111111111) == 4111111111111111
    assert redactor.redact_json(None) is None


def test_redact_json_survives_cycles_and_deep_nesting() -> None:
    loop: list[Any] = ["x@y.de"]
    loop.append(loop)
    out = Redactor().redact_json(loop)
    assert out[0] == "[EMAIL]"
    assert out[1] is out

    deep: list[Any] = ["x@y.de"]
    for _ in range(10_000):
        deep = [deep]
    node = Redactor().redact_json(deep)
    for _ in range(10_000):
        node = node[0]
    assert node == ["[EMAIL]"]


# -- user ids ----------------------------------------------------------------------------------


def test_hash_user_id_is_a_short_keyed_hmac() -> None:
    hashed = hash_user_id("user-42", "k3y")
    expected = hmac.new(b"k3y", b"user-42", hashlib.sha256).hexdigest()[:32]
    assert hashed == "u_" + expected
    assert re.fullmatch(r"u_[0-9a-f]{32}", hashed)


def test_hash_user_id_is_deterministic() -> None:
    assert hash_user_id("alice@example.com", "key") == hash_user_id("alice@example.com", "key")


def test_hash_user_id_depends_on_the_key_and_the_user() -> None:
    assert hash_user_id("alice", "key-1") != hash_user_id("alice", "key-2")
    assert hash_user_id("alice", "key-1") != hash_user_id("bob", "key-1")


def test_hash_user_id_accepts_unencodable_text() -> None:
    assert re.fullmatch(r"u_[0-9a-f]{32}", hash_user_id("bad\ud800id", "key"))


def test_hash_user_id_refuses_an_empty_key() -> None:
    with pytest.raises(ValueError, match="non-empty key"):
        hash_user_id("alice", "")
