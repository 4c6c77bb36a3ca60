"""The ``jwt`` auth method: its Config, and a bearer JWT -> the verified identity binding rules read.

A :class:`JWTConfig` is decoded (and refused with a clear message) when the method is written, so a
stored method always decodes. At login, :func:`validate` checks the signature against the static
PEM keys (``JWTValidationPubKeys``) or the keys a :class:`JWKSCache` fetched from ``JWKSURL`` or from
the ``jwks_uri`` of the ``OIDCDiscoveryURL``'s discovery document (whose issuer a token must name), then
the time claims with the three leeways, ``iss`` and ``aud``, and projects the claims through
``ClaimMappings`` / ``ListClaimMappings`` into an :class:`Identity`:
``{"value": {name: str}, "list": {name: [str]}}``, the object a binding rule's Selector is evaluated
on and its BindName is interpolated from.

Signatures are verified with joserfc (JWS and JWK done right: RSA, RSA-PSS, ECDSA, EdDSA); ``none``
and HMAC are never accepted, whatever the Config says. Every failure is a :class:`JWTError` whose
text says which check failed.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from beacon.durations import DurationError, parse_duration
from beacon.numbers import ascii_int

# Asymmetric algorithms only: a public-key method must never accept a shared secret or no signature.
SUPPORTED_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
DEFAULT_EXPIRATION_LEEWAY, DEFAULT_NOT_BEFORE_LEEWAY, DEFAULT_CLOCK_SKEW_LEEWAY = 150.0, 150.0, 60.0
JWKS_CACHE_SECONDS = 300.0   # keys fetched from a JWKS URL are reused this long ...
JWKS_REFETCH_SECONDS = 10.0  # ... and refetched early for an unknown kid at most this often
JWKS_TIMEOUT = 10.0

_STRING_KEYS = ("JWKSURL", "JWKSCACert", "BoundIssuer", "OIDCDiscoveryURL", "OIDCDiscoveryCACert")
_LIST_KEYS = ("JWTValidationPubKeys", "JWTSupportedAlgs", "BoundAudiences")
_MAP_KEYS = ("ClaimMappings", "ListClaimMappings")
_LEEWAY_KEYS = ("ExpirationLeeway", "NotBeforeLeeway", "ClockSkewLeeway")
KNOWN_KEYS = frozenset(_STRING_KEYS + _LIST_KEYS + _MAP_KEYS + _LEEWAY_KEYS)


class ConfigError(ValueError):
    """An auth method Config that cannot be used (the write is refused with this text)."""


class JWTError(Exception):
    """A bearer token that does not validate (the login is refused with this text)."""


@dataclass(frozen=True)
class JWTConfig:
    pub_keys: tuple[Any, ...] = ()          # joserfc keys from JWTValidationPubKeys
    jwks_url: str = ""
    jwks_ca_cert: str = ""
    discovery_url: str = ""                  # OIDC discovery: the issuer, whose document names the JWKS
    discovery_ca_cert: str = ""
    algs: tuple[str, ...] = ("RS256",)
    bound_issuer: str = ""
    bound_audiences: tuple[str, ...] = ()
    claim_mappings: dict[str, str] = field(default_factory=dict)
    list_claim_mappings: dict[str, str] = field(default_factory=dict)
    expiration_leeway: float = DEFAULT_EXPIRATION_LEEWAY
    not_before_leeway: float = DEFAULT_NOT_BEFORE_LEEWAY
    clock_skew_leeway: float = DEFAULT_CLOCK_SKEW_LEEWAY

    def variables(self) -> tuple[set[str], set[str]]:
        """(names under ``value.``, names under ``list.``) a binding rule may use."""
        return set(self.claim_mappings.values()), set(self.list_claim_mappings.values())


@dataclass(frozen=True)
class Identity:
    value: dict[str, str]
    lists: dict[str, list[str]]

    def selectable(self) -> dict[str, Any]:
        return {"value": dict(self.value), "list": {k: list(v) for k, v in self.lists.items()}}


# ---------------------------------------------------------------------- config
def _leeway(raw: Any, name: str, default: float) -> float:
    if raw in (None, "", 0):
        return default
    try:
        seconds = parse_duration(raw)
    except DurationError as exc:
        raise ConfigError(f"Invalid Auth Method: Config.{name}: {exc}") from None
    if seconds == 0:
        return default
    return max(seconds, 0.0)  # negative (Consul documents -1) disables the leeway


def _str_list(raw: Any, name: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ConfigError(f"Invalid Auth Method: Config.{name} must be a list of strings")
    return tuple(raw)


def _str_map(raw: Any, name: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and v
                                            for k, v in raw.items()):
        raise ConfigError(f"Invalid Auth Method: Config.{name} must map claim names to non-empty names")
    return dict(raw)


def _public_key(pem: str) -> Any:
    for cls in (RSAKey, ECKey, OKPKey):
        try:
            key = cls.import_key(pem)
        except (JoseError, ValueError, TypeError):
            continue
        if key.is_private:
            raise ConfigError("Invalid Auth Method: JWTValidationPubKeys must hold public keys, not private ones")
        return key
    raise ConfigError("Invalid Auth Method: JWTValidationPubKeys entry is not a PEM public key "
                      "(RSA, EC or Ed25519)")


def decode_config(raw: Any) -> JWTConfig:
    """A ``jwt`` method's Config -> :class:`JWTConfig`, or :class:`ConfigError` saying what is wrong."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("Invalid Auth Method: Config must be an object")
    unknown = sorted(k for k in raw if k not in KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"Invalid Auth Method: Config has unknown keys for type \"jwt\": {', '.join(unknown)}")
    for name in _STRING_KEYS:
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise ConfigError(f"Invalid Auth Method: Config.{name} must be a string")
    pems = _str_list(raw.get("JWTValidationPubKeys"), "JWTValidationPubKeys")
    jwks_url = raw.get("JWKSURL") or ""
    discovery_url = raw.get("OIDCDiscoveryURL") or ""
    if [bool(pems), bool(jwks_url), bool(discovery_url)].count(True) != 1:
        raise ConfigError("Invalid Auth Method: exactly one of Config.JWTValidationPubKeys, Config.JWKSURL and "
                          "Config.OIDCDiscoveryURL must be set")
    for name, url in (("JWKSURL", jwks_url), ("OIDCDiscoveryURL", discovery_url)):
        if url and not url.startswith(("https://", "http://")):
            raise ConfigError(f"Invalid Auth Method: Config.{name} {url!r} is not an http(s) URL")
    ca, discovery_ca = raw.get("JWKSCACert") or "", raw.get("OIDCDiscoveryCACert") or ""
    for name, pem, needs, url in (("JWKSCACert", ca, "JWKSURL", jwks_url),
                                  ("OIDCDiscoveryCACert", discovery_ca, "OIDCDiscoveryURL", discovery_url)):
        if not pem:
            continue
        if not url:
            raise ConfigError(f"Invalid Auth Method: Config.{name} needs Config.{needs}")
        try:
            ssl.create_default_context(cadata=pem)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"Invalid Auth Method: Config.{name} is not a PEM certificate: {exc}") from None
    algs = _str_list(raw.get("JWTSupportedAlgs"), "JWTSupportedAlgs") or ("RS256",)
    bad = [a for a in algs if a not in SUPPORTED_ALGS]
    if bad:
        raise ConfigError(f"Invalid Auth Method: Config.JWTSupportedAlgs: unsupported algorithm {bad[0]!r} "
                          f"(supported: {', '.join(SUPPORTED_ALGS)})")
    claims = _str_map(raw.get("ClaimMappings"), "ClaimMappings")
    list_claims = _str_map(raw.get("ListClaimMappings"), "ListClaimMappings")
    clash = set(claims.values()) & set(list_claims.values())
    if clash:
        raise ConfigError(f"Invalid Auth Method: Config: {sorted(clash)[0]!r} is the target of both "
                          "ClaimMappings and ListClaimMappings")
    return JWTConfig(
        pub_keys=tuple(_public_key(p) for p in pems), jwks_url=jwks_url, jwks_ca_cert=ca,
        discovery_url=discovery_url, discovery_ca_cert=discovery_ca, algs=algs,
        bound_issuer=raw.get("BoundIssuer") or "",
        bound_audiences=_str_list(raw.get("BoundAudiences"), "BoundAudiences"),
        claim_mappings=claims, list_claim_mappings=list_claims,
        expiration_leeway=_leeway(raw.get("ExpirationLeeway"), "ExpirationLeeway", DEFAULT_EXPIRATION_LEEWAY),
        not_before_leeway=_leeway(raw.get("NotBeforeLeeway"), "NotBeforeLeeway", DEFAULT_NOT_BEFORE_LEEWAY),
        clock_skew_leeway=_leeway(raw.get("ClockSkewLeeway"), "ClockSkewLeeway", DEFAULT_CLOCK_SKEW_LEEWAY),
    )


# ---------------------------------------------------------------------- JWKS
Fetch = Callable[[str, str], Any]  # (url, ca pem) -> awaitable JWKS document


async def fetch_jwks(url: str, ca_pem: str) -> Any:
    import aiohttp

    ctx: ssl.SSLContext | bool = ssl.create_default_context(cadata=ca_pem) if ca_pem else True
    timeout = aiohttp.ClientTimeout(total=JWKS_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session, \
            session.get(url, ssl=ctx if url.startswith("https://") else None) as resp:
        if resp.status != 200:
            raise JWTError(f"fetching JWKS from {url}: HTTP {resp.status}")
        return orjson.loads(await resp.read())


class JWKSCache:
    """Key sets by (URL, CA), kept :data:`JWKS_CACHE_SECONDS`; a token whose ``kid`` the cached set
    lacks triggers one early refetch (keys rotate), at most every :data:`JWKS_REFETCH_SECONDS`.
    OIDC discovery documents are kept as long."""

    def __init__(self, fetch: Fetch = fetch_jwks, clock: Callable[[], float] = time.monotonic) -> None:
        self.fetch = fetch
        self.clock = clock
        self._sets: dict[tuple[str, str], tuple[float, KeySet]] = {}
        self._discovered: dict[tuple[str, str], tuple[float, str, str]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def discover(self, issuer_url: str, ca: str) -> tuple[str, str]:
        """(issuer, jwks_uri) from ``<issuer_url>/.well-known/openid-configuration``; the document's
        issuer must be the URL configured (OIDC Discovery 1.0, section 4.3)."""
        key = ("discovery:" + issuer_url, ca)
        async with self._locks.setdefault(key, asyncio.Lock()):
            hit = self._discovered.get(key)
            now = self.clock()
            if hit is not None and now - hit[0] < JWKS_CACHE_SECONDS:
                return hit[1], hit[2]
            url = issuer_url.rstrip("/") + "/.well-known/openid-configuration"
            try:
                doc = await self.fetch(url, ca)
            except JWTError:
                raise
            except Exception as exc:
                raise JWTError(f"fetching OIDC discovery document {url}: {exc or type(exc).__name__}") from None
            issuer, jwks_uri = (doc.get("issuer"), doc.get("jwks_uri")) if isinstance(doc, dict) else (None, None)
            if not isinstance(issuer, str) or issuer.rstrip("/") != issuer_url.rstrip("/"):
                raise JWTError(f"OIDC discovery document at {url} names issuer {issuer!r}, not {issuer_url!r}")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise JWTError(f"OIDC discovery document at {url} has no http(s) jwks_uri")
            if len(self._discovered) > 64:
                self._discovered.clear()
            self._discovered[key] = (now, issuer, jwks_uri)
            return issuer, jwks_uri

    async def keys(self, url: str, ca: str, kid: str | None) -> KeySet:
        key = (url, ca)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._sets.get(key)
            now = self.clock()
            if hit is not None:
                age = now - hit[0]
                fresh = age < JWKS_CACHE_SECONDS
                has_kid = kid is None or any(k.kid == kid for k in hit[1].keys)
                if fresh and (has_kid or age < JWKS_REFETCH_SECONDS):
                    return hit[1]
            try:
                doc = await self.fetch(url, ca)
                keyset = KeySet.import_key_set(doc)
            except JWTError:
                raise
            except Exception as exc:  # network, TLS, JSON or key errors: the login fails, says why
                raise JWTError(f"fetching JWKS from {url}: {exc or type(exc).__name__}") from None
            if len(self._sets) > 64:
                self._sets.clear()
            self._sets[key] = (now, keyset)
            return keyset


DEFAULT_JWKS = JWKSCache()


# ---------------------------------------------------------------------- validation
def _b64json(part: str, what: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise JWTError(f"malformed JWT: {what} is not base64url JSON") from None


def _header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTError("malformed JWT: expected three dot-separated parts")
    header = _b64json(parts[0], "header")
    if not isinstance(header, dict):
        raise JWTError("malformed JWT: header is not an object")
    return header


def _verify(token: str, keys: list[Any], alg: str) -> dict[str, Any]:
    for key in keys:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # joserfc warns that RFC 9864 deprecates "EdDSA"
                sig = jws.deserialize_compact(token, key, algorithms=[alg])
        except (JoseError, ValueError, TypeError):  # wrong key for the alg, bad signature bytes ...
            continue
        try:
            claims = orjson.loads(sig.payload) if sig.payload else None
        except orjson.JSONDecodeError:
            claims = None
        if not isinstance(claims, dict):
            raise JWTError("malformed JWT: the payload is not a JSON object")
        return claims
    raise JWTError("failed to verify signature: no configured key verifies it")


def _number(claims: dict[str, Any], name: str) -> float | None:
    v = claims.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise JWTError(f"invalid claim {name!r}: not a number")
    return float(v)


def check_claims(cfg: JWTConfig, claims: dict[str, Any], now: float) -> None:
    skew = cfg.clock_skew_leeway
    exp, nbf, iat = _number(claims, "exp"), _number(claims, "nbf"), _number(claims, "iat")
    if exp is not None and now > exp + cfg.expiration_leeway + skew:
        raise JWTError("token is expired (exp)")
    if nbf is not None and now + cfg.not_before_leeway + skew < nbf:
        raise JWTError("token is not yet valid (nbf)")
    if iat is not None and now + skew < iat:
        raise JWTError("token was issued in the future (iat)")
    if cfg.bound_issuer and claims.get("iss") != cfg.bound_issuer:
        raise JWTError(f"invalid issuer (iss) {claims.get('iss')!r}: want {cfg.bound_issuer!r}")
    if cfg.bound_audiences:
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not set(auds) & set(cfg.bound_audiences):
            raise JWTError("invalid audience (aud): none of the token's audiences is bound")


def _claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name, or by JSON pointer when the name starts with '/' (``/nested/field``)."""
    if not name.startswith("/"):
        return claims.get(name)
    cur: Any = claims
    for part in name[1:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and (i := ascii_int(part)) is not None and i < len(cur):
            cur = cur[i]
        else:
            return None
    return cur


def _stringify(v: Any, name: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, str | int | float):
        return str(v)
    raise JWTError(f"claim {name!r} holds a {type(v).__name__}, not a string, number or boolean")


def identity(cfg: JWTConfig, claims: dict[str, Any]) -> Identity:
    value = {target: "" for target in cfg.claim_mappings.values()}
    lists: dict[str, list[str]] = {target: [] for target in cfg.list_claim_mappings.values()}
    for name, target in cfg.claim_mappings.items():
        v = _claim(claims, name)
        if v is not None:
            value[target] = _stringify(v, name)
    for name, target in cfg.list_claim_mappings.items():
        v = _claim(claims, name)
        if v is None:
            continue
        lists[target] = [_stringify(x, name) for x in (v if isinstance(v, list) else [v])]
    return Identity(value, lists)


async def validate(cfg: JWTConfig, token: str, jwks: JWKSCache | None = None,
                   now: float | None = None) -> Identity:
    """Verify ``token`` under ``cfg``; the identity its claims map to, or :class:`JWTError`."""
    token = token.strip()
    header = _header(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise JWTError("unsigned JWT (alg \"none\") is not accepted")
    if alg not in cfg.algs:
        raise JWTError(f"JWT signing algorithm {alg!r} is not one of JWTSupportedAlgs ({', '.join(cfg.algs)})")
    kid = header.get("kid") if isinstance(header.get("kid"), str) else None
    cache = jwks or DEFAULT_JWKS
    issuer = ""
    if cfg.pub_keys:
        keys = list(cfg.pub_keys)
    else:
        if cfg.discovery_url:
            issuer, jwks_uri = await cache.discover(cfg.discovery_url, cfg.discovery_ca_cert)
            keyset = await cache.keys(jwks_uri, cfg.discovery_ca_cert, kid)
        else:
            keyset = await cache.keys(cfg.jwks_url, cfg.jwks_ca_cert, kid)
        keys = [k for k in keyset.keys if kid is None or k.kid in (None, kid)]
    claims = _verify(token, keys, alg)
    if issuer and claims.get("iss") != issuer:  # OIDC: a token is valid only from the discovered issuer
        raise JWTError(f"invalid issuer (iss) {claims.get('iss')!r}: the OIDC issuer is {issuer!r}")
    check_claims(cfg, claims, time.time() if now is None else now)
    return identity(cfg, claims)
