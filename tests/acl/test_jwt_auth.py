"""The jwt auth method without processes: Config decoding, JWT validation (keys made with
`cryptography`, tokens signed with joserfc), the JWKS cache, binding rules, and the replicated
auth-method / binding-rule tables."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jws
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from beacon.acl import auth_state, binding, jwtauth, state
from beacon.acl.binding import BindError
from beacon.acl.jwtauth import ConfigError, JWTError
from beacon.server import commands as cmd
from beacon.server import sessions
from beacon.server.fsm import StateStore

NOW = 1_800_000_000.0


def _rsa() -> tuple[RSAKey, str]:
    priv = rsa.generate_private_key(65537, 2048)
    return _pair(priv, RSAKey)


def _ec() -> tuple[ECKey, str]:
    return _pair(ec.generate_private_key(ec.SECP256R1()), ECKey)


def _pair(priv, cls):
    pem = priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return cls.import_key(pem), pub


RSA_KEY, RSA_PUB = _rsa()
EC_KEY, EC_PUB = _ec()


def sign(claims: dict, key=RSA_KEY, alg: str = "RS256", kid: str | None = None) -> str:
    header = {"alg": alg, "typ": "JWT"}
    if kid:
        header["kid"] = kid
    return jws.serialize_compact(header, json.dumps(claims).encode(), key, algorithms=[alg])


def claims(**extra) -> dict:
    base = {"iss": "https://ci.example", "aud": "beacon", "sub": "job-1", "iat": NOW - 10, "nbf": NOW - 10,
            "exp": NOW + 300, "service": "web", "groups": ["dev", "ops"]}
    base.update(extra)
    return base


def config(**extra) -> jwtauth.JWTConfig:
    raw = {"JWTValidationPubKeys": [RSA_PUB], "BoundIssuer": "https://ci.example", "BoundAudiences": ["beacon"],
           "ClaimMappings": {"service": "service", "sub": "subject"}, "ListClaimMappings": {"groups": "groups"}}
    raw.update(extra)
    return jwtauth.decode_config(raw)


def validate(cfg: jwtauth.JWTConfig, token: str, jwks=None, now: float = NOW) -> jwtauth.Identity:
    return asyncio.run(jwtauth.validate(cfg, token, jwks, now=now))


# ---------------------------------------------------------------------- good tokens
def test_rs256_token_maps_claims() -> None:
    ident = validate(config(), sign(claims()))
    assert ident.value == {"service": "web", "subject": "job-1"}
    assert ident.lists == {"groups": ["dev", "ops"]}


def test_es256_token_with_es256_allowed() -> None:
    cfg = config(JWTValidationPubKeys=[EC_PUB], JWTSupportedAlgs=["ES256"])
    assert validate(cfg, sign(claims(), EC_KEY, "ES256")).value["service"] == "web"


def test_second_static_key_and_audience_list_match() -> None:
    cfg = config(JWTValidationPubKeys=[EC_PUB, RSA_PUB], BoundAudiences=["other", "beacon"])
    assert validate(cfg, sign(claims(aud=["x", "beacon"]))).value["subject"] == "job-1"


def test_claim_values_are_stringified_and_pointers_reach_nested_claims() -> None:
    cfg = config(ClaimMappings={"/nomad/job": "job", "admin": "admin", "n": "n"},
                 ListClaimMappings={"ids": "ids"})
    ident = validate(cfg, sign(claims(nomad={"job": "api"}, admin=True, n=3, ids=[1, False])))
    assert ident.value == {"job": "api", "admin": "true", "n": "3"}
    assert ident.lists == {"ids": ["1", "false"]}
    missing = validate(cfg, sign(claims()))
    assert missing.value == {"job": "", "admin": "", "n": ""} and missing.lists == {"ids": []}


# ---------------------------------------------------------------------- bad tokens
@pytest.mark.parametrize("bad, why", [
    (claims(exp=NOW - 211), "expired"),                 # beyond 150 s + 60 s of leeway
    (claims(nbf=NOW + 211), "not yet valid"),
    (claims(iat=NOW + 61), "issued in the future"),
    (claims(iss="https://evil.example"), "invalid issuer"),
    (claims(aud="someone-else"), "invalid audience"),
    (claims(aud=None), "invalid audience"),
])
def test_bad_claims_are_refused(bad: dict, why: str) -> None:
    with pytest.raises(JWTError, match=why):
        validate(config(), sign(bad))


def test_leeways_default_and_can_be_disabled() -> None:
    late = sign(claims(exp=NOW - 200))
    assert validate(config(), late)  # within 150 s + 60 s
    with pytest.raises(JWTError, match="expired"):
        validate(config(ExpirationLeeway="-1s", ClockSkewLeeway=-1), late)
    with pytest.raises(JWTError, match="expired"):
        validate(config(ExpirationLeeway="10s"), late)


def test_wrong_key_is_refused() -> None:
    other, _ = _rsa()
    with pytest.raises(JWTError, match="verify signature"):
        validate(config(), sign(claims(), other))


def test_tampered_payload_is_refused() -> None:
    head, _, sig = sign(claims()).split(".")
    body = base64.urlsafe_b64encode(json.dumps(claims(service="admin")).encode()).rstrip(b"=").decode()
    with pytest.raises(JWTError, match="verify signature"):
        validate(config(), f"{head}.{body}.{sig}")


def test_alg_none_is_never_accepted() -> None:
    def b64(doc: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    for alg in ("none", "None"):
        with pytest.raises(JWTError, match="none"):
            validate(config(), f"{b64({'alg': alg})}.{b64(claims())}.")
    with pytest.raises(ConfigError, match="unsupported algorithm 'none'"):
        config(JWTSupportedAlgs=["none"])


def test_unsupported_algorithms_are_refused() -> None:
    with pytest.raises(JWTError, match="'ES256' is not one of JWTSupportedAlgs"):
        validate(config(), sign(claims(), EC_KEY, "ES256"))
    # HS256 signed with the public key's bytes: the classic confusion attack.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc rightly warns that a PEM is no HMAC secret
        hmac = OctKey.import_key(RSA_PUB.encode())
    with pytest.raises(JWTError, match="'HS256' is not one of"):
        validate(config(JWTSupportedAlgs=["RS256"]), sign(claims(), hmac, "HS256"))
    with pytest.raises(ConfigError, match="unsupported algorithm 'HS256'"):
        config(JWTSupportedAlgs=["HS256"])


@pytest.mark.parametrize("token", ["", "a.b", "not.a.jwt", "e30.e30.e30"])
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(JWTError):
        validate(config(), token)


def test_a_signed_payload_that_is_not_a_json_object_is_refused() -> None:
    for payload in (b"not json", b"[1, 2]"):
        token = jws.serialize_compact({"alg": "RS256"}, payload, RSA_KEY, algorithms=["RS256"])
        with pytest.raises(JWTError, match="not a JSON object"):
            validate(config(), token)


# ---------------------------------------------------------------------- config
@pytest.mark.parametrize("raw, why", [
    ({}, "exactly one of"),
    ({"JWTValidationPubKeys": [RSA_PUB], "JWKSURL": "https://x"}, "exactly one of"),
    ({"JWTValidationPubKeys": ["not a key"]}, "not a PEM public key"),
    ({"JWKSURL": "ftp://x"}, "not an http"),
    ({"JWKSURL": "https://x", "JWKSCACert": "junk"}, "JWKSCACert is not a PEM"),
    ({"OIDCDiscoveryURL": "https://x", "JWKSURL": "https://y"}, "exactly one of"),
    ({"OIDCDiscoveryURL": "x.example"}, "OIDCDiscoveryURL 'x.example' is not an http"),
    ({"JWKSURL": "https://x", "OIDCDiscoveryCACert": "junk"}, "OIDCDiscoveryCACert needs"),
    ({"JWKSURL": "https://x", "BoundAudience": ["typo"]}, "unknown keys.*BoundAudience"),
    ({"JWKSURL": "https://x", "ExpirationLeeway": "soon"}, "ExpirationLeeway"),
    ({"JWKSURL": "https://x", "ClaimMappings": {"a": "x"}, "ListClaimMappings": {"b": "x"}}, "both"),
    ("nope", "must be an object"),
])
def test_bad_configs(raw, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        jwtauth.decode_config(raw)


def test_private_key_in_config_is_refused() -> None:
    pem = RSA_KEY.as_pem(private=True).decode()
    with pytest.raises(ConfigError, match="not private"):
        jwtauth.decode_config({"JWTValidationPubKeys": [pem]})


# ---------------------------------------------------------------------- JWKS cache
class FakeJWKS:
    def __init__(self, *keys) -> None:
        self.keys = list(keys)
        self.calls = 0

    async def __call__(self, url: str, ca: str):
        self.calls += 1
        return KeySet(self.keys).as_dict()


def test_jwks_picks_the_key_by_kid_and_caches_the_set() -> None:
    other, _ = _rsa()
    fake = FakeJWKS(RSAKey.import_key(RSA_PUB, parameters={"kid": "k1"}),
                    RSAKey.import_key(other.as_pem().decode(), parameters={"kid": "k2"}))
    clock = [0.0]
    cache = jwtauth.JWKSCache(fake, clock=lambda: clock[0])
    cfg = config(JWTValidationPubKeys=None, JWKSURL="https://idp.example/jwks")
    assert validate(cfg, sign(claims(), kid="k1"), cache).value["service"] == "web"
    assert validate(cfg, sign(claims(), other, kid="k2"), cache).value["service"] == "web"
    assert fake.calls == 1
    with pytest.raises(JWTError, match="verify signature"):
        validate(cfg, sign(claims(), kid="k2"), cache)  # kid names the other key: no match


def test_jwks_refetches_for_a_new_kid_but_not_in_a_loop() -> None:
    rotated, rotated_pub = _rsa()
    fake = FakeJWKS(RSAKey.import_key(RSA_PUB, parameters={"kid": "old"}))
    clock = [0.0]
    cache = jwtauth.JWKSCache(fake, clock=lambda: clock[0])
    cfg = config(JWTValidationPubKeys=None, JWKSURL="https://idp.example/jwks")
    validate(cfg, sign(claims(), kid="old"), cache)
    fake.keys.append(RSAKey.import_key(rotated_pub, parameters={"kid": "new"}))
    with pytest.raises(JWTError):
        validate(cfg, sign(claims(), rotated, kid="new"), cache)  # too soon after the last fetch
    assert fake.calls == 1
    clock[0] = jwtauth.JWKS_REFETCH_SECONDS + 1
    assert validate(cfg, sign(claims(), rotated, kid="new"), cache)
    assert fake.calls == 2


def test_jwks_fetch_failure_is_a_jwt_error() -> None:
    async def down(url: str, ca: str):
        raise OSError("connection refused")

    cfg = config(JWTValidationPubKeys=None, JWKSURL="https://idp.example/jwks")
    with pytest.raises(JWTError, match="connection refused"):
        validate(cfg, sign(claims()), jwtauth.JWKSCache(down))


# ---------------------------------------------------------------------- binding rules
def _rule(bind_type: str, bind_name: str, selector: str = "") -> dict:
    return {"ID": str(uuid.uuid4()), "AuthMethod": "ci", "BindType": bind_type, "BindName": bind_name,
            "Selector": selector}


IDENT = {"value": {"service": "web", "subject": "job-1", "team": "Payments"},
         "list": {"groups": ["dev", "ops"]}}


def test_rules_select_and_interpolate() -> None:
    rules = [
        _rule("service", "${value.service}"),
        _rule("service", "${value.service}"),                       # duplicate: bound once
        _rule("node", "ci-${value.service}", 'value.subject == "job-1"'),
        _rule("role", "admins", '"admin" in list.groups'),         # does not match
        _rule("role", "team-${value.team}", '"ops" in list.groups and value.service != "db"'),
        _rule("policy", "readers"),
    ]
    out = binding.evaluate(rules, IDENT, "dc1")
    assert out.service_identities == [{"ServiceName": "web"}]
    assert out.node_identities == [{"NodeName": "ci-web", "Datacenter": "dc1"}]
    assert out.roles == ["team-Payments"] and out.policies == ["readers"]
    assert binding.evaluate([_rule("service", "x", 'value.service == "db"')], IDENT, "dc1").empty()


def test_a_computed_name_that_is_not_valid_fails_the_login() -> None:
    with pytest.raises(BindError, match="not a valid name for a service identity"):
        binding.evaluate([_rule("service", "${value.team}")], IDENT, "dc1")  # uppercase


@pytest.mark.parametrize("bind_type, name, selector, why", [
    ("user", "x", "", "unknown BindType"),
    ("service", "", "", "BindName is required"),
    ("service", "${value.nope}", "", "maps no claim to 'nope'"),
    ("service", "${list.groups}", "", "only value"),
    ("service", "${value.service", "", "unterminated"),
    ("service", "Web_${value.service}", "", "not a valid name"),
    ("service", "web", "value.service ==", "Selector is invalid"),
    ("service", "web", "value.service = 'x'", "Selector is invalid"),
    ("service", "web", 'value.serivce == "web"', "'value.serivce' is not a variable"),
    ("service", "web", '"x" in list.service', "'list.service' is not a variable"),
    ("service", "web", 'value.service == "a" or Name == "b"', "'Name' is not a variable"),
    ("service", "web", 'value.service.deep == "a"', "is not a variable"),
])
def test_rule_validation(bind_type: str, name: str, selector: str, why: str) -> None:
    with pytest.raises(BindError, match=why):
        binding.validate_rule(bind_type, name, selector, {"service"}, {"groups"})


def test_rule_validation_accepts_good_rules() -> None:
    binding.validate_rule("service", "svc-${value.service}", '"ops" in list.groups and value.service != ""',
                          {"service"}, {"groups"})
    binding.validate_rule("role", "Team_${value.service}", "", {"service"})


# ---------------------------------------------------------------------- replicated tables
def _store() -> StateStore:
    store = StateStore()
    sessions.install(store)
    return store


def _ok(store: StateStore, record: cmd.Record):
    result = store.apply(record)
    assert result.error is None, result.error
    return result.value


def _method(name: str = "ci") -> dict:
    return {"Name": name, "Type": "jwt", "DisplayName": "", "Description": "", "Config": {"JWKSURL": "https://x"}}


def _token(method: str | None) -> dict:
    tok = {"AccessorID": str(uuid.uuid4()), "SecretID": str(uuid.uuid4()), "Description": "", "Policies": None,
           "Local": True, "CreateTime": "2026-01-01T00:00:00Z"}
    if method:
        tok["AuthMethod"] = method
    return tok


def test_deleting_a_method_deletes_its_rules_and_tokens_only() -> None:
    store = _store()
    _ok(store, cmd.ACLAuthMethodSet(method=_method("ci")))
    _ok(store, cmd.ACLAuthMethodSet(method=_method("other")))
    mine, theirs = _rule("service", "a"), dict(_rule("service", "b"), AuthMethod="other")
    _ok(store, cmd.ACLBindingRuleSet(rule=mine))
    _ok(store, cmd.ACLBindingRuleSet(rule=theirs))
    login, plain, other_login = _token("ci"), _token(None), _token("other")
    for tok in (login, plain, other_login):
        _ok(store, cmd.ACLTokenSet(token=tok))
    before = state.acl_index(store)
    _ok(store, cmd.ACLAuthMethodDelete(name="ci"))
    assert state.acl_index(store) > before
    assert set(auth_state.methods(store)) == {"other"}
    assert [r["ID"] for r in auth_state.rules(store)] == [theirs["ID"]]
    assert set(state.tokens(store)) == {state.ANONYMOUS_ACCESSOR, plain["AccessorID"], other_login["AccessorID"]}


def test_apply_refuses_rules_and_tokens_of_a_missing_method() -> None:
    store = _store()
    assert "unknown AuthMethod" in store.apply(cmd.ACLBindingRuleSet(rule=_rule("service", "a"))).error.message
    assert "not found" in store.apply(cmd.ACLTokenSet(token=_token("ci"))).error.message
    _ok(store, cmd.ACLAuthMethodSet(method=_method()))
    changed = dict(_method(), Type="kubernetes")
    assert "cannot change" in store.apply(cmd.ACLAuthMethodSet(method=changed)).error.message


def test_indexes_and_snapshot_restore() -> None:
    store = _store()
    first = _ok(store, cmd.ACLAuthMethodSet(method=_method()))
    again = _ok(store, cmd.ACLAuthMethodSet(method=dict(_method(), Description="edited")))
    assert again["CreateIndex"] == first["CreateIndex"] < again["ModifyIndex"]
    rule = _ok(store, cmd.ACLBindingRuleSet(rule=_rule("service", "a")))
    other = _store()
    other.restore(store.snapshot())
    assert auth_state.method(other, "ci")["Description"] == "edited"
    assert auth_state.rule(other, rule["ID"]) == rule
    # The delete goes through its log form, as replicas receive it.
    log_form = cmd.encode(cmd.ACLBindingRuleDelete(id=rule["ID"]))
    assert log_form == (int(cmd.MessageType.ACL), {"op": "binding_rule_delete", "id": rule["ID"]})
    _ok(other, cmd.decode(*log_form))
    assert auth_state.rules(other) == []


def test_the_leader_reaps_expired_tokens_and_apply_rechecks_the_time() -> None:
    from beacon.acl import reaper

    store = _store()
    old, fresh, forever = _token("ci"), _token(None), _token(None)
    old["ExpirationTime"] = "2026-01-01T00:00:00Z"
    fresh["ExpirationTime"] = "2026-01-01T00:10:00Z"
    _ok(store, cmd.ACLAuthMethodSet(method=_method()))
    for tok in (old, fresh, forever):
        _ok(store, cmd.ACLTokenSet(token=tok))
    at = 1767225660.0  # 2026-01-01T00:01:00Z
    assert reaper.expired(store, at) == [old["AccessorID"]]
    # A command listing a token that had not expired by its time deletes nothing.
    assert _ok(store, cmd.ACLTokenReap(ids=[fresh["AccessorID"]], now=at)) == 0

    async def submit(record):
        return store.apply(record)

    assert asyncio.run(reaper.step(store, submit, clock=lambda: at)) == 1
    assert set(state.tokens(store)) == {state.ANONYMOUS_ACCESSOR, fresh["AccessorID"], forever["AccessorID"]}
    assert asyncio.run(reaper.step(store, submit, clock=lambda: at + 3600)) == 1
    assert fresh["AccessorID"] not in state.tokens(store)


def test_login_description_is_meta_marshalled_as_go_does() -> None:
    from beacon.endpoints.acl_auth import description

    assert description(None) == description({}) == "token created via login"
    assert description({"pod": "default/web", "a": "é<&>"}) == \
        'token created via login: {"a":"é\\u003c\\u0026\\u003e","pod":"default/web"}'


class FakeIdP:
    """Answers the discovery document and the JWKS by URL; counts fetches."""

    def __init__(self, issuer: str, doc_issuer: str | None = None) -> None:
        self.issuer = issuer
        self.doc_issuer = issuer if doc_issuer is None else doc_issuer
        self.fetched: list[str] = []

    async def __call__(self, url: str, ca: str):
        self.fetched.append(url)
        if url == self.issuer + "/.well-known/openid-configuration":
            return {"issuer": self.doc_issuer, "jwks_uri": self.issuer + "/keys"}
        if url == self.issuer + "/keys":
            return KeySet([RSAKey.import_key(RSA_PUB)]).as_dict()
        raise OSError(f"404 for {url}")


def test_oidc_discovery_finds_the_keys_and_pins_the_issuer() -> None:
    idp = FakeIdP("https://ci.example")
    cache = jwtauth.JWKSCache(idp)
    cfg = config(JWTValidationPubKeys=None, OIDCDiscoveryURL="https://ci.example/", BoundIssuer=None)
    assert validate(cfg, sign(claims()), cache).value["service"] == "web"
    assert validate(cfg, sign(claims()), cache)
    assert idp.fetched == ["https://ci.example/.well-known/openid-configuration", "https://ci.example/keys"]
    with pytest.raises(JWTError, match="the OIDC issuer is"):
        validate(cfg, sign(claims(iss="https://other.example")), cache)


def test_oidc_discovery_document_for_another_issuer_is_refused() -> None:
    cache = jwtauth.JWKSCache(FakeIdP("https://ci.example", doc_issuer="https://evil.example"))
    cfg = config(JWTValidationPubKeys=None, OIDCDiscoveryURL="https://ci.example")
    with pytest.raises(JWTError, match="names issuer 'https://evil.example'"):
        validate(cfg, sign(claims()), cache)
