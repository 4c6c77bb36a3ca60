import beacon.checks


def test_public_names_resolve_and_are_listed_once():
    names = beacon.checks.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(beacon.checks, name) is not None
    public = {n for n in vars(beacon.checks) if not n.startswith("_") and n[0].isupper() or n in (
        "alias_result", "format_duration", "parse_duration", "service_check_id")}
    submodules = {"alias", "clock", "definition", "docker", "durations", "errors", "http", "network",
                  "output", "probe", "scheduler", "script", "status", "ttl"}
    assert public - submodules <= set(names)
