"""JWT bearer tokens: HS256 with a shared secret, RS256/ES256 with public keys
from a JWKS file. `sub` names the account. `iss` and `aud` must match the
configured ones (billing refuses to start with JWT enabled and either unset), and
a token may live at most the configured maximum (`exp - iat`; `iat` required).

The algorithm is never taken on trust from the token: each verification passes
PyJWT exactly one algorithm, chosen by which key we hold for it, and the key type
must match (an RSA key never verifies an HS256 token, `none` is never allowed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt

from quantized_runtime.errors import Reason, ServiceError

HMAC_ALGORITHM = "HS256"
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")


class JwksError(ValueError):
    """The JWKS file cannot be used; raised at start."""


def load_jwks(path: Path) -> list[jwt.PyJWK]:
    """Signature keys of the file; anything unusable stops the start with a reason."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise JwksError(f"cannot read JWKS file {path}: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise JwksError(f"JWKS file {path} has no 'keys' list")
    keys = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        name = entry.get("kid") or f"#{index}"
        if "d" in entry:
            raise JwksError(f"JWKS key {name} holds private key material; list public keys only")
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            raise JwksError(f"JWKS key {name} is not usable: {exc}") from None
        if key.algorithm_name not in PUBLIC_KEY_ALGORITHMS:
            raise JwksError(f"JWKS key {name} uses {key.algorithm_name}; "
                            f"supported: {', '.join(PUBLIC_KEY_ALGORITHMS)}")
        keys.append(key)
    if not keys:
        raise JwksError(f"JWKS file {path} has no signature keys")
    return keys


def _unauthenticated(detail: str) -> ServiceError:
    return ServiceError(Reason.UNAUTHENTICATED, f"invalid bearer token: {detail}")


class JwtVerifier:
    def __init__(self, *, secret: str | None, public_keys: list[jwt.PyJWK],
                 issuer: str | None, audience: str | None, leeway_seconds: float,
                 max_lifetime_seconds: int = 0) -> None:
        self._secret = secret
        self._public_keys = public_keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._max_lifetime = max_lifetime_seconds
        required = ["exp", "sub"]
        if issuer:
            required.append("iss")
        if audience:
            required.append("aud")
        # A lifetime is measured from `iat`; without it a token could claim any age.
        if max_lifetime_seconds:
            required.append("iat")
        self._options: Any = {"require": required, "enforce_minimum_key_length": True}

    def account_id(self, token: str) -> str:
        """The verified `sub`, or UNAUTHENTICATED with a message that never quotes the token."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthenticated("not an API key or a well-formed JWT") from None
        algorithm = header.get("alg")
        key = self._key_for(algorithm, header.get("kid"))
        try:
            claims = jwt.decode(token, key, algorithms=[str(algorithm)], options=self._options,
                                issuer=self._issuer, audience=self._audience,
                                leeway=self._leeway)
        except jwt.ExpiredSignatureError:
            raise _unauthenticated("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _unauthenticated("token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise _unauthenticated("wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise _unauthenticated("wrong audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthenticated(f"missing claim {exc.claim!r}") from None
        except jwt.PyJWTError:
            raise _unauthenticated("signature or claims do not verify") from None
        if self._max_lifetime and claims["exp"] - claims["iat"] > self._max_lifetime:
            raise _unauthenticated(f"token lifetime (exp - iat) is over the maximum of "
                                   f"{self._max_lifetime} seconds")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise _unauthenticated("claim 'sub' must name an account")
        return subject

    def _key_for(self, algorithm: Any, kid: Any) -> str | jwt.PyJWK:
        if algorithm == HMAC_ALGORITHM and self._secret:
            return self._secret
        if algorithm in PUBLIC_KEY_ALGORITHMS:
            candidates = [k for k in self._public_keys if k.algorithm_name == algorithm]
            if kid is not None:
                candidates = [k for k in candidates if k.key_id == kid]
            if len(candidates) == 1:
                return candidates[0]
            if len(candidates) > 1:
                raise _unauthenticated("token needs a 'kid' naming one of the configured keys")
            raise _unauthenticated("no configured key matches the token's key id")
        raise _unauthenticated("algorithm not accepted")
