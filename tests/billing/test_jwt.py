"""JWT bearer tokens through a real billing server: HS256 with the shared secret,
RS256 and ES256 against a JWKS file, and every way a token must be refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from quantized_runtime.settings import SettingsError

from .conftest import BillingClient, StartBilling, expect_error

HMAC_SECRET = "an-hs256-secret-of-at-least-32-bytes!!"
ISSUER = "https://login.school.example"
AUDIENCE = "quantized-images"


@pytest.fixture
def database_url(sqlite_database_url) -> str:
    """Token checks do not depend on the database engine: SQLite only, to stay fast."""
    return sqlite_database_url


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def jwks_file(tmp_path, rsa_key, ec_key) -> Path:
    rsa_jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    ec_jwk = ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [
        {**rsa_jwk, "kid": "rsa-1", "use": "sig", "alg": "RS256"},
        {**ec_jwk, "kid": "ec-1", "use": "sig"},
    ]}))
    return path


@pytest.fixture
async def jwt_client(start_billing: StartBilling, jwks_file) -> BillingClient:
    return await start_billing(jwt_secret=HMAC_SECRET, jwt_jwks_file=jwks_file,
                               jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
                               jwt_leeway_seconds=0)


@pytest.fixture
async def account_id(jwt_client: BillingClient) -> str:
    return (await jwt_client.create_account(credits=1_000)).account.account_id


def claims(subject: str | None, **overrides) -> dict:
    now = int(time.time())
    values = {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now - 5,
              "exp": now + 300}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_hs256_token_authenticates_its_account(jwt_client, account_id) -> None:
    token = jwt.encode(claims(account_id), HMAC_SECRET, algorithm="HS256")
    identity = await jwt_client.authenticate(token)
    assert (identity.account_id, identity.key_id, identity.unlimited) == (account_id, "", False)


async def test_rs256_and_es256_tokens_verify_against_the_jwks_file(
        jwt_client, account_id, rsa_key, ec_key) -> None:
    rs = jwt.encode(claims(account_id), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(claims(account_id), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    es_without_kid = jwt.encode(claims(account_id), ec_key, algorithm="ES256")
    for token in (rs, es, es_without_kid):
        assert (await jwt_client.authenticate(token)).account_id == account_id


def unsigned_token(account_id: str) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims(account_id)).encode())
    return f"{header}.{payload}."


def confused_token(account_id: str, rsa_key) -> str:
    """HS256 'signed' with the RSA public key: the classic algorithm-confusion forgery."""
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = _b64(json.dumps(claims(account_id)).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


EXPECTED_PROBLEM = {
    "alg_none": "algorithm not accepted",
    "algorithm_confusion": "do not verify",
    "ec_key_under_rsa_kid": "no configured key",
    "wrong_hmac_secret": "do not verify",
    "unknown_kid": "no configured key",
    "expired": "has expired",
    "not_yet_valid": "not valid yet",
    "wrong_issuer": "wrong issuer",
    "wrong_audience": "wrong audience",
    "missing_exp": "missing claim 'exp'",
    "missing_sub": "missing claim 'sub'",
    "unknown_account": "unknown account",
    "tampered_payload": "do not verify",
    "hs512": "algorithm not accepted",
    "ten_year_lifetime": "over the maximum of 86400 seconds",
    "missing_iat": "missing claim 'iat'",
}


@pytest.mark.parametrize("case", EXPECTED_PROBLEM)
async def test_bad_tokens_are_unauthenticated(jwt_client, account_id, rsa_key, ec_key,
                                              case) -> None:
    now = int(time.time())
    tokens = {
        "alg_none": lambda: unsigned_token(account_id),
        "algorithm_confusion": lambda: confused_token(account_id, rsa_key),
        "ec_key_under_rsa_kid": lambda: jwt.encode(
            claims(account_id), ec_key, algorithm="ES256", headers={"kid": "rsa-1"}),
        "wrong_hmac_secret": lambda: jwt.encode(claims(account_id), "x" * 40, algorithm="HS256"),
        "unknown_kid": lambda: jwt.encode(claims(account_id), rsa_key, algorithm="RS256",
                                          headers={"kid": "rsa-2"}),
        "expired": lambda: jwt.encode(claims(account_id, exp=now - 60), HMAC_SECRET,
                                      algorithm="HS256"),
        "not_yet_valid": lambda: jwt.encode(claims(account_id, nbf=now + 600), HMAC_SECRET,
                                            algorithm="HS256"),
        "wrong_issuer": lambda: jwt.encode(claims(account_id, iss="https://evil.example"),
                                           HMAC_SECRET, algorithm="HS256"),
        "wrong_audience": lambda: jwt.encode(claims(account_id, aud="another-api"),
                                             HMAC_SECRET, algorithm="HS256"),
        "missing_exp": lambda: jwt.encode(claims(account_id, exp=None), HMAC_SECRET,
                                          algorithm="HS256"),
        "missing_sub": lambda: jwt.encode(claims(None), HMAC_SECRET,
                                          algorithm="HS256"),
        "unknown_account": lambda: jwt.encode(claims("acct_nobody"), HMAC_SECRET,
                                              algorithm="HS256"),
        "tampered_payload": lambda: _tamper(jwt.encode(claims(account_id), rsa_key,
                                                       algorithm="RS256",
                                                       headers={"kid": "rsa-1"})),
        "hs512": lambda: jwt.encode(claims(account_id), HMAC_SECRET + "x" * 40,
                                    algorithm="HS512"),
        "ten_year_lifetime": lambda: jwt.encode(claims(account_id, exp=now + 10 * 365 * 86400),
                                                HMAC_SECRET, algorithm="HS256"),
        "missing_iat": lambda: jwt.encode(claims(account_id, iat=None), HMAC_SECRET,
                                          algorithm="HS256"),
    }
    token = tokens[case]()
    error = await expect_error(jwt_client.authenticate(token), "UNAUTHENTICATED")
    assert EXPECTED_PROBLEM[case] in error.message
    assert token not in error.message
    for part in token.split("."):
        if len(part) > 8:
            assert part not in error.message


def _tamper(token: str) -> str:
    header, _payload, signature = token.split(".")
    forged = _b64(json.dumps(claims("acct_someone_else")).encode())
    return f"{header}.{forged}.{signature}"


async def test_without_jwt_configuration_every_jwt_is_refused(start_billing) -> None:
    client = await start_billing()
    account_id = (await client.create_account()).account.account_id
    token = jwt.encode(claims(account_id), HMAC_SECRET, algorithm="HS256")
    await expect_error(client.authenticate(token), "UNAUTHENTICATED")


@pytest.mark.parametrize(("configured", "missing"), [
    ({"jwt_audience": AUDIENCE}, "QUANTIZED_JWT_ISSUER"),
    ({"jwt_issuer": ISSUER}, "QUANTIZED_JWT_AUDIENCE"),
    ({}, "QUANTIZED_JWT_ISSUER and QUANTIZED_JWT_AUDIENCE"),
])
async def test_jwt_without_issuer_or_audience_stops_the_start(start_billing, jwks_file, configured,
                                                              missing) -> None:
    for key in ({"jwt_secret": HMAC_SECRET}, {"jwt_jwks_file": jwks_file}):
        with pytest.raises(SettingsError) as caught:
            await start_billing(**key, **configured)
        assert f"{missing} required when JWT is enabled" in str(caught.value)


async def test_a_lifetime_maximum_of_zero_accepts_long_tokens_and_no_iat(start_billing) -> None:
    client = await start_billing(jwt_secret=HMAC_SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
                                 jwt_max_lifetime_seconds=0)
    account_id = (await client.create_account()).account.account_id
    long_lived = claims(account_id, iat=None, exp=int(time.time()) + 10 * 365 * 86400)
    token = jwt.encode(long_lived, HMAC_SECRET, algorithm="HS256")
    assert (await client.authenticate(token)).account_id == account_id


@pytest.mark.parametrize(("content", "problem"), [
    ("not json", "cannot read JWKS file"),
    ('{"keys": []}', "no 'keys' list"),
    ('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "sym"}]}', "HS256"),
])
async def test_an_unusable_jwks_file_stops_the_start(start_billing, tmp_path, content,
                                                     problem) -> None:
    path = tmp_path / "bad-jwks.json"
    path.write_text(content)
    with pytest.raises(SettingsError) as caught:
        await start_billing(jwt_jwks_file=path)
    assert "QUANTIZED_JWT_JWKS_FILE" in str(caught.value)
    assert problem in str(caught.value)


async def test_a_jwks_file_with_private_keys_stops_the_start(start_billing, tmp_path,
                                                             rsa_key) -> None:
    private = RSAAlgorithm.to_jwk(rsa_key, as_dict=True)
    path = tmp_path / "private-jwks.json"
    path.write_text(json.dumps({"keys": [{**private, "kid": "oops"}]}))
    with pytest.raises(SettingsError) as caught:
        await start_billing(jwt_jwks_file=path)
    assert "private key material" in str(caught.value)
