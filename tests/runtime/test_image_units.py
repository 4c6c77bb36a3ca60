"""Pure pieces of the image store and the OCI spec: layer unpacking (whiteouts, untrusted paths),
references, capabilities, Dockerfile parsing. No engine process needed."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from beacon.runtime import _dockerfile as dockerfile
from beacon.runtime._errors import InvalidParameter
from beacon.runtime._images import ImageStore, normalize, split_ref
from beacon.runtime._layers import OPAQUE_XATTR, LayerError, copy_layers, resolve_in, unpack
from beacon.runtime._spec import DEFAULT_CAPS, capabilities, lookup_user, merge_env

ROOT = os.geteuid() == 0


def _tar(path: Path, members: list[tuple[str, bytes | None, str]]) -> Path:
    """members: (name, data or None for a directory, symlink target or "")."""
    with tarfile.open(path, "w") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.skipif(not ROOT, reason="whiteouts are character devices: mknod needs root")
def test_whiteouts_become_overlay_markers_and_the_copy_fallback_applies_them(tmp_path: Path) -> None:
    lower = tmp_path / "l1"
    unpack(_tar(tmp_path / "1.tar", [("etc", None, ""), ("etc/keep", b"k", ""), ("etc/gone", b"g", ""),
                                      ("var", None, ""), ("var/old", b"o", "")]), lower)
    upper = tmp_path / "l2"
    unpack(_tar(tmp_path / "2.tar", [("etc/.wh.gone", b"", ""), ("var/.wh..wh..opq", b"", ""),
                                      ("var/new", b"n", "")]), upper)
    marker = os.lstat(upper / "etc" / "gone")
    assert stat.S_ISCHR(marker.st_mode) and marker.st_rdev == 0
    assert os.getxattr(upper / "var", OPAQUE_XATTR) == b"y"
    merged = tmp_path / "merged"
    copy_layers([upper, lower], merged)  # top first, as overlay's lowerdir
    assert sorted(os.listdir(merged / "etc")) == ["keep"]
    assert sorted(os.listdir(merged / "var")) == ["new"]


@pytest.mark.parametrize("members", [
    [("../escape", b"x", "")],
    [("link", None, "/"), ("link/../../escape", b"x", "")],
])
def test_a_layer_cannot_write_outside_its_directory(tmp_path: Path, members: list) -> None:
    dest = tmp_path / "layers" / "x"
    dest.parent.mkdir()
    try:
        unpack(_tar(tmp_path / "evil.tar", members), dest)
    except LayerError:
        pass
    assert not (tmp_path / "escape").exists() and not (tmp_path / "layers" / "escape").exists()


def test_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "bin").symlink_to("/usr/bin")  # absolute: must stay inside tmp_path
    (tmp_path / "loop").symlink_to("loop")
    assert resolve_in(str(tmp_path), "bin/sh") == str(tmp_path / "usr" / "bin" / "sh")
    assert resolve_in(str(tmp_path), "../../etc/passwd") == str(tmp_path / "etc" / "passwd")
    with pytest.raises(LayerError):
        resolve_in(str(tmp_path), "loop/x")


def test_references_normalise_like_docker() -> None:
    assert normalize("busybox") == "busybox:latest"
    assert normalize("docker.io/library/busybox:1.36") == "busybox:1.36"
    assert normalize("127.0.0.1:5000/app") == "127.0.0.1:5000/app:latest"
    assert split_ref("127.0.0.1:5000/app@sha256:" + "a" * 64) == ("127.0.0.1:5000/app", "", "sha256:" + "a" * 64)
    with pytest.raises(InvalidParameter):
        normalize("Upper/Case")


def test_store_tags_and_untags(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    diff = store.add_layer(io.BytesIO(_tar(tmp_path / "l.tar", [("f", b"1", "")]).read_bytes()))
    image = store.add_image({"config": {"Cmd": ["true"]}, "rootfs": {"type": "layers", "diff_ids": [diff]}},
                            ["app"])
    store.tag("app", "app", "v2")
    assert store.repo_tags(image) == ["app:latest", "app:v2"]
    assert store.remove("app:v2", False, {}) == [{"Untagged": "app:v2"}]
    out = store.remove("app", False, {})
    assert out[-1] == {"Deleted": image} and not (store.layers / diff.removeprefix("sha256:")).exists()


def test_capabilities_and_users(tmp_path: Path) -> None:
    assert capabilities([], [], False) == DEFAULT_CAPS
    assert "CAP_NET_RAW" not in capabilities([], ["net_raw"], False)
    assert "CAP_NET_ADMIN" in capabilities(["NET_ADMIN"], [], False)
    assert capabilities([], ["ALL"], False) == []
    with pytest.raises(InvalidParameter):
        capabilities(["NOT_A_CAP"], [], False)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("app:x:1000:\nextra:x:2000:app\n")
    assert lookup_user(str(tmp_path), "app") == (1000, 1000, [2000], "/home/app")
    assert lookup_user(str(tmp_path), "42:7") == (42, 7, [], "/")
    with pytest.raises(InvalidParameter, match="unable to find user nobody"):
        lookup_user(str(tmp_path), "nobody")
    env = merge_env(["PATH=/bin", "A=image"], ["A=container"], "h", "/root")
    assert env == ["PATH=/bin", "HOSTNAME=h", "A=container", "HOME=/root"]


def test_dockerfile_parsing_and_config_instructions() -> None:
    steps = dockerfile.parse("# comment\nFROM busybox\nRUN echo a \\\n    && echo b\nENV A=1 B=\"two words\"\n")
    assert steps == [("FROM", "busybox"), ("RUN", "echo a  && echo b"), ("ENV", 'A=1 B="two words"')]
    cfg: dict = {"Cmd": ["from-base"]}
    for keyword, args in [("ENV", 'A=1 B="two words"'), ("WORKDIR", "/srv"), ("WORKDIR", "app"),
                          ("ENTRYPOINT", '["run"]'), ("EXPOSE", "80 53/udp"), ("LABEL", "k=v"),
                          ("HEALTHCHECK", "--interval=2s --retries=5 CMD test -f /ok")]:
        dockerfile.apply(cfg, keyword, args)
    assert cfg["Env"] == ["A=1", "B=two words"] and cfg["WorkingDir"] == "/srv/app"
    assert cfg["Entrypoint"] == ["run"] and cfg["Cmd"] is None  # ENTRYPOINT drops the base image's CMD
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}} and cfg["Labels"] == {"k": "v"}
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "test -f /ok"], "Interval": 2_000_000_000, "Retries": 5}
    with pytest.raises(InvalidParameter):
        dockerfile.apply(cfg, "BOGUS", "x")
