"""Roll back without deleting: `mdl promote NAME --version N` pins the current version (list, show,
predict, export and score follow; serve in test_serve), `--latest` unpins; removing the pinned version
drops the pin; bad input is one line with the registry unchanged; a 0004 registry upgrades to the pin."""
from __future__ import annotations

from _serve_helpers import make_registry, png_bytes, register_domain
from conftest import tree_digest

from mdl.registry import db
from mdl.registry.store import Registry


def two_versions(home):
    reg = make_registry(home, {"alpha": 3, "beta": 4})
    register_domain(reg, reg.trunks()[0].id, "alpha", 3, seed=99)  # alpha v2
    return reg


def current(mdl, home, name):
    rows = {r["name"]: r for r in mdl("list", "--json", home=home).json()}
    return rows[name]["version"], rows[name]["pinned"]


def test_promote_pins_the_current_version_everywhere(tmp_path, mdl, home):
    reg = two_versions(home)
    (tmp_path / "a.png").write_bytes(png_bytes(0))
    assert current(mdl, home, "alpha") == (2, False)
    out = mdl("promote", "alpha", "--version", "1", "--json", home=home)
    assert out.code == 0 and out.json()["version"] == 1 and out.json()["pinned"] is True
    assert current(mdl, home, "alpha") == (1, True) and current(mdl, home, "beta") == (1, False)
    assert reg.domain_version("alpha").version == 1 and [v.version for v in reg.current_versions()] == [1, 1]
    show = {r["version"]: r for r in mdl("show", "alpha", "--json", home=home).json()["versions"]}
    assert show[1]["current"] and show[1]["pinned"] and not show[2]["current"] and show[2]["removed"] is None
    pred = mdl("predict", "alpha", str(tmp_path / "a.png"), "--json", "--device", "cpu", home=home)
    assert pred.code == 0 and pred.json()[0]["version"] == 1
    exp = mdl("export", "alpha", "beta", "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--json", home=home)
    assert exp.code == 0 and [d["version"] for d in exp.json()["domains"]] == [1, 1]
    # a version registered while pinned is kept but not current; the command says so
    register_domain(reg, reg.trunks()[0].id, "alpha", 3, seed=100)  # v3
    assert current(mdl, home, "alpha") == (1, True)
    back = mdl("promote", "alpha", "--latest", home=home)
    assert back.code == 0 and "current is v3" in back.stderr
    assert current(mdl, home, "alpha") == (3, False)


def test_removing_the_pinned_version_drops_the_pin(mdl, home):
    two_versions(home)
    assert mdl("promote", "alpha", "-v", "1", home=home).code == 0
    assert mdl("remove", "alpha", "--version", "1", home=home).code == 0
    assert current(mdl, home, "alpha") == (2, False)
    assert Registry.open(home).domain_version("alpha").pinned_version is None


def test_bad_promote_is_one_line_and_changes_nothing(mdl, home):
    reg = two_versions(home)
    reg.remove("alpha", 2)
    before = tree_digest(home)
    for args, message in ((["alpha", "--version", "7"], "has no version 7"), (["alpha", "--version", "2"], "is removed"),
                          (["nope", "--version", "1"], "unknown domain"), (["alpha"], "--version N"),
                          (["alpha", "--version", "1", "--latest"], "--version N")):
        r = mdl("promote", *args, home=home)
        assert r.code == 1 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert tree_digest(home) == before


def test_a_0004_registry_upgrades_to_the_pin_and_keeps_its_current_versions(tmp_path, mdl):
    home = tmp_path / "old"
    home.mkdir()
    old = Registry(home)
    db.upgrade(old.engine, "0004")
    with old.engine.begin() as conn:  # a domain with two versions, made by the previous release's schema
        conn.exec_driver_sql("INSERT INTO artifacts (id, kind, path, sha256, size, created_at) VALUES "
                             "(1, 'trunk', 't', '', 0, '2026-11-30'), (2, 'domain', 'a1', '', 0, '2026-11-30'), "
                             "(3, 'domain', 'a2', '', 0, '2026-11-30')")
        conn.exec_driver_sql("INSERT INTO trunks (id, arch, version, width, source, num_params, config, provenance, "
                             "artifact_id, created_at) VALUES (1, 'resnet26_dw', 1, 0.25, 'src', 10, '{}', '{}', 1, '2026-11-30')")
        conn.exec_driver_sql("INSERT INTO domains (id, name, created_at) VALUES (1, 'alpha', '2026-11-30')")
        conn.exec_driver_sql("INSERT INTO domain_versions (id, domain_id, version, method, num_classes, domain_params, "
                             "trunk_id, artifact_id, classes, data, config, layout, created_at) VALUES "
                             "(1, 1, 1, 'dw', 3, 5, 1, 2, '[]', '{}', '{}', 2, '2026-11-30'), "
                             "(2, 1, 2, 'dw', 3, 5, 1, 3, '[]', '{}', '{}', 2, '2026-11-30')")
    assert mdl("list", home=home).code == 1  # refused until upgraded
    up = mdl("db", "upgrade", home=home)
    assert up.code == 0, up.stderr
    reg = Registry.open(home)
    assert db.current_revision(reg.engine) == db.head_revision(reg.engine)
    assert reg.domain_version("alpha").version == 2 and reg.domain_version("alpha").pinned_version is None
    assert reg.promote("alpha", 1).version == 1 and reg.domain_version("alpha").pinned
