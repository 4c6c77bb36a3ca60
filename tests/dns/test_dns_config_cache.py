"""DNSConfig (Consul's dns_config keys and defaults) and the answer cache."""

from __future__ import annotations

import pytest

from beacon.dns import DNSConfig, SOAConfig
from beacon.dns.cache import AnswerCache


def test_defaults_are_consuls() -> None:
    cfg = DNSConfig()
    assert (cfg.domain, cfg.datacenter, cfg.recursors) == ("consul", "dc1", ())
    assert cfg.allow_stale and not cfg.only_passing and not cfg.enable_truncate
    assert cfg.udp_answer_limit == 3 and cfg.a_record_limit == 0
    assert cfg.node_ttl == 0 and cfg.service_ttl_for("web") == 0
    assert cfg.max_stale == 87600 * 3600 and cfg.recursor_timeout == 2.0
    assert cfg.recursor_strategy == "sequential" and cfg.enable_additional_node_meta_txt
    assert cfg.soa == SOAConfig(3600, 600, 86400, 0)


def test_from_consul_json() -> None:
    cfg = DNSConfig.from_consul_json(
        {"allow_stale": False, "max_stale": "5s", "node_ttl": "30s", "service_ttl": {"*": "5s", "web": "1m", "db*": "10s"},
         "udp_answer_limit": 5, "a_record_limit": 2, "enable_truncate": True, "only_passing": True,
         "recursor_strategy": "random", "recursor_timeout": "500ms", "disable_compression": True,
         "enable_additional_node_meta_txt": False, "soa": {"min_ttl": 60, "refresh": 10}, "use_cache": True,
         "cache_max_age": "1m30s"},
        domain="Beacon.", datacenter="DC2", node_name="n1", recursors=["8.8.8.8", "127.0.0.1:5353", "::1"])
    assert cfg.domain == "beacon" and cfg.datacenter == "dc2"
    assert cfg.recursors == ("8.8.8.8:53", "127.0.0.1:5353", "[::1]:53")
    assert (cfg.max_stale, cfg.node_ttl, cfg.recursor_timeout, cfg.cache_max_age) == (5, 30, 0.5, 90)
    assert cfg.service_ttl_for("web") == 60 and cfg.service_ttl_for("dbx") == 10 and cfg.service_ttl_for("x") == 5
    assert cfg.soa == SOAConfig(refresh=10, retry=600, expire=86400, min_ttl=60)
    assert cfg.enable_truncate and cfg.only_passing and cfg.disable_compression


def test_json_numbers_are_nanoseconds_like_consul() -> None:
    assert DNSConfig.from_consul_json({"node_ttl": 30_000_000_000}).node_ttl == 30


@pytest.mark.parametrize("dns_config,top,needle", [
    ({"bogus": 1}, {}, "dns_config.bogus"),
    ({"node_ttl": "30"}, {}, "dns_config.node_ttl"),
    ({"node_ttl": "soon"}, {}, "dns_config.node_ttl"),
    ({"udp_answer_limit": "3"}, {}, "dns_config.udp_answer_limit"),
    ({"only_passing": "yes"}, {}, "dns_config.only_passing"),
    ({"recursor_strategy": "fastest"}, {}, "dns_config.recursor_strategy"),
    ({"service_ttl": {"web": "x"}}, {}, "service_ttl.web"),
    ({"soa": {"minttl": 1}}, {}, "dns_config.soa.minttl"),
    ({"soa": {"min_ttl": -1}}, {}, "dns_config.soa.min_ttl"),
    ({"domain": "x"}, {}, "dns_config.domain"),
    ({}, {"recursors": ["not-an-ip"]}, "recursors"),
    ({}, {"recursors": "8.8.8.8"}, "recursors"),
    ({}, {"ports": 1}, "ports"),
])
def test_bad_settings_name_the_key(dns_config: dict, top: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        DNSConfig.from_consul_json(dns_config, **top)


def test_cache_rotates_variants_and_checks_the_index() -> None:
    cache = AnswerCache()
    key = b"question"
    for i in range(3):
        assert cache.next_variant(key) == i
        cache.add(key, 7, b"ID" + bytes([i]), variants=3, time_dependent=False, variant=i)
    index, next_tail, _, _ = cache.entries[key]
    assert index == 7 and [next_tail() for _ in range(4)] == [b"\x00", b"\x01", b"\x02", b"\x00"]
    # Without deps, a newer catalog restarts the collection: the order built for it is not kept.
    cache.add(b"other", 8, b"IDx", variants=2, time_dependent=False)
    assert cache.next_variant(b"other") == 1
    cache.add(b"other", 9, b"IDy", variants=2, time_dependent=False, variant=1)
    assert cache.next_variant(b"other") == 0 and b"other" not in cache.entries


def test_cache_keeps_collecting_across_versions_while_the_deps_hold() -> None:
    cache = AnswerCache()
    deps = (("service_index", "web", 5),)
    cache.add(b"q", 10, b"ID0", variants=3, time_dependent=False, deps=deps, variant=0)
    cache.add(b"q", 11, b"ID1", variants=3, time_dependent=False, deps=deps, variant=1)
    # What it read moved: the collection starts over with this build (variant 0 only).
    moved = (("service_index", "web", 6),)
    cache.add(b"q", 12, b"IDa", variants=3, time_dependent=False, deps=moved, variant=2)
    assert cache.next_variant(b"q") == 0 and b"q" not in cache.entries
    for i, index in enumerate((13, 14, 15)):
        cache.add(b"q", index, b"ID" + bytes([65 + i]), variants=3, time_dependent=False, deps=moved, variant=i)
    index, next_tail, _, _ = cache.entries[b"q"]
    assert index == 15 and [next_tail() for _ in range(3)] == [b"A", b"B", b"C"]
    assert cache.deps[b"q"] == moved


def test_cache_drops_soa_answers_every_tick_and_bounds_its_size() -> None:
    cache = AnswerCache(max_bytes=100)
    cache.add(b"neg", 1, b"IDsoa", variants=1, time_dependent=True)
    cache.add(b"pos", 1, b"IDa", variants=1, time_dependent=False)
    cache.expire_timed()
    assert list(cache.entries) == [b"pos"]
    for i in range(50):
        cache.add(b"k%d" % i, 1, b"ID" + b"x" * 20, variants=1, time_dependent=False)
    assert sum(e[2] for e in cache.entries.values()) <= 100
    assert b"k49" in cache.entries and b"k0" not in cache.entries


def test_public_names_are_exported_and_sorted() -> None:
    import beacon.dns

    assert beacon.dns.__all__ == sorted(beacon.dns.__all__)
    for name in beacon.dns.__all__:
        assert getattr(beacon.dns, name) is not None
    assert {"DNSConfig", "DNSServer"} <= set(beacon.dns.__all__)
