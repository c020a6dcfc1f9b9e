"""`mdl serve` as a user runs it: the real process on a free local port, a real HTTP client (httpx).
Mixed-domain requests answer what `mdl predict` answers and run as one stacked pass; bad requests get a
one-line 4xx and disturb nobody; versions registered, tampered with or removed while serving are picked
up without a restart."""
from __future__ import annotations

import base64
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from _serve_helpers import make_registry, png_bytes, register_domain, start_server, stop_server
from conftest import invoke, tree_digest

DOMAINS = {"alpha": 3, "beta": 5, "gamma": 7}
UPLOAD_LIMIT = 50_000  # bytes (--max-upload-mb 0.05 is 52,428)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    home = base / "home"
    make_registry(home, DOMAINS)
    images = {}
    for i in range(4):
        images[i] = base / f"img{i}.png"
        images[i].write_bytes(png_bytes(i, size=(20 + 3 * i, 17 + i)))
    proc, url, log, env = start_server(home, base, max_wait_ms=100)
    client = httpx.Client(base_url=url, timeout=30)
    try:
        yield {"url": url, "home": home, "images": images, "client": client, "log": log, "env": env}
    finally:
        client.close()
        stop_server(proc)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def post(client, items, top_k=10):
    return client.post("/v1/predict", json={"items": [{"domain": d, "image": b64(p)} for d, p in items],
                                            "top_k": top_k})


def mdl_predict(home, items, top_k=10):
    args = [items[0][1].as_posix()] + [f"{d}@{p}" for d, p in items[1:]]
    res = invoke("predict", items[0][0], *args, "--top-k", str(top_k), "--json", "--device", "cpu", home=home)
    assert res.code == 0, res.stderr
    return res.json()


def same_answers(got: list[dict], want: list[dict], tol: float = 2e-4) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g["domain"], g["version"]) == (w["domain"], w["version"])
        gp = {t["class"]: t["probability"] for t in g["top"]}
        wp = {t["class"]: t["probability"] for t in w["top"]}
        assert gp.keys() == wp.keys(), (g, w)
        assert all(abs(gp[c] - wp[c]) <= tol for c in gp), (g, w)
        assert [t["index"] for t in g["top"]][:1] == [t["index"] for t in w["top"]][:1] or \
            abs(g["top"][0]["probability"] - g["top"][1]["probability"]) <= tol  # ties may swap


def metric(client, name: str) -> float:
    text = client.get("/metrics").text
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def wait_until(fn, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


# ---------------------------------------------------------------------------------------------- answers


def test_mixed_request_equals_mdl_predict_in_one_pass(server):
    c, im = server["client"], server["images"]
    items = [("alpha", im[0]), ("beta", im[1]), ("gamma", im[2]), ("alpha", im[3]), ("gamma", im[0])]
    passes, batches = metric(c, "mdl_forward_passes_total"), metric(c, "mdl_batch_size_count")
    res = post(c, items)
    assert res.status_code == 200, res.text
    got = res.json()["predictions"]
    assert [len(p["top"]) for p in got] == [3, 5, 7, 3, 7]  # top_k 10, capped at each domain's classes
    assert got[1]["top"][0]["class"].startswith("beta-class")
    same_answers(got, mdl_predict(server["home"], items))
    # five items of three domains: one batch, ONE stacked forward pass
    assert metric(c, "mdl_forward_passes_total") == passes + 1
    assert metric(c, "mdl_batch_size_count") == batches + 1


def test_multipart_upload_answers_the_same(server):
    c, im = server["client"], server["images"]
    files = [("image", (f"x{i}.png", im[i].read_bytes(), "image/png")) for i in (1, 2)]
    res = c.post("/v1/predict", files=files, data={"domain": ["gamma", "beta"], "top_k": "3"})
    assert res.status_code == 200, res.text
    got = res.json()["predictions"]
    assert [p["image"] for p in got] == ["x1.png", "x2.png"]
    same_answers(got, mdl_predict(server["home"], [("gamma", im[1]), ("beta", im[2])], top_k=3))
    one_domain = c.post("/v1/predict", files=files, data={"domain": "alpha"})  # one domain for every file
    assert [p["domain"] for p in one_domain.json()["predictions"]] == ["alpha", "alpha"]


def test_concurrent_requests_of_different_domains_share_batches(server):
    c, im = server["client"], server["images"]
    jobs = [(d, im[i % 4]) for i, d in enumerate(["alpha", "beta", "gamma", "beta", "alpha", "gamma"])]
    want = {i: post(c, [job]).json()["predictions"][0] for i, job in enumerate(jobs)}
    passes = metric(c, "mdl_forward_passes_total")
    barrier, results = threading.Barrier(len(jobs)), {}

    def send(i):
        with httpx.Client(base_url=server["url"], timeout=30) as own:
            barrier.wait()
            results[i] = post(own, [jobs[i]])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in results.values())
    for i in range(len(jobs)):
        same_answers(results[i].json()["predictions"], [want[i]])
    assert metric(c, "mdl_forward_passes_total") - passes < len(jobs)  # some requests rode in one pass


def test_domains_health_and_metrics(server):
    c = server["client"]
    rows = c.get("/v1/domains").json()
    listed = invoke("list", "--json", home=server["home"]).json()
    assert [{k: r[k] for k in listed[0]} for r in rows] == listed  # what `mdl list --json` says
    assert all(r["served_version"] == r["version"] and r["refused"] is None for r in rows)
    health = c.get("/healthz").json()
    assert health["status"] == "ok" and health["domains"] == sorted(DOMAINS)
    text = c.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    for name in ("mdl_requests_total", "mdl_images_total", "mdl_batch_size_bucket", "mdl_images_per_second",
                 'mdl_request_latency_window_seconds{quantile="0.99"}', "mdl_served_domains 3.0"):
        assert name in text.text


# ---------------------------------------------------------------------------------------------- bad input

BAD = [
    ({"json": {"items": [{"domain": "nope", "image": "aGVsbG8="}]}}, 404, "unknown domain 'nope'"),
    ({"json": {"items": [{"domain": "alpha", "image": base64.b64encode(b"not an image").decode()}]}}, 400, "cannot decode image"),
    ({"json": {"items": [{"domain": "alpha", "image": "%%%not base64%%%"}]}}, 400, "not valid base64"),
    ({"content": b'{"items": [', "headers": {"content-type": "application/json"}}, 400, "malformed JSON"),
    ({"json": {"items": [{"domain": "alpha"}]}}, 400, "item 0: expected"),
    ({"json": {"items": []}}, 400, "non-empty"),
    ({"json": {"items": [{"domain": "alpha", "image": "aGVsbG8="}], "top_k": 0}}, 400, "top_k"),
    ({"content": b"x" * (UPLOAD_LIMIT + 5000), "headers": {"content-type": "application/json"}}, 413, "limit"),
    ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
    ({"files": [("other", ("a.png", b"123", "image/png"))], "data": {"domain": "alpha"}}, 400, "no 'image' file"),
]


@pytest.mark.parametrize("kwargs,status,reason", BAD, ids=[b[2] for b in BAD])
def test_bad_requests_get_one_line_4xx_and_leave_the_registry_alone(server, kwargs, status, reason):
    c = server["client"]
    before = tree_digest(server["home"])
    res = c.post("/v1/predict", **kwargs)
    assert res.status_code == status, res.text
    message = res.json()["error"]
    assert reason in message and "\n" not in message
    assert tree_digest(server["home"]) == before


def test_bad_requests_do_not_disturb_their_batch_neighbours(server):
    c, im = server["client"], server["images"]
    good = [("beta", im[3]), ("alpha", im[1])]
    want = post(c, good).json()["predictions"]
    bad = [kw for kw, _, _ in BAD[:4]]
    barrier, results = threading.Barrier(len(bad) + 1), {}

    def send(key, fn):
        with httpx.Client(base_url=server["url"], timeout=30) as own:
            barrier.wait()
            results[key] = fn(own)

    threads = [threading.Thread(target=send, args=("good", lambda own: post(own, good)))]
    threads += [threading.Thread(target=send, args=(i, lambda own, kw=kw: own.post("/v1/predict", **kw)))
                for i, kw in enumerate(bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["good"].status_code == 200
    same_answers(results["good"].json()["predictions"], want)
    assert [results[i].status_code for i in range(len(bad))] == [404, 400, 400, 400]


def test_unknown_route_and_method(server):
    res = server["client"].get("/v1/nothing")
    assert res.status_code == 404 and "\n" not in res.json()["error"]
    assert server["client"].get("/v1/predict").status_code == 405


# ---------------------------------------------------------------------------------------------- registry changes


def served(client, name):
    row = next((r for r in client.get("/v1/domains").json() if r["name"] == name), None)
    return row["served_version"] if row else None


def test_version_registered_while_serving_is_served(server):
    from mdl.registry.store import Registry

    c, im, home = server["client"], server["images"], server["home"]
    reg = Registry.open(home)
    trunk = reg.trunks()[0].id
    assert post(c, [("delta", im[0])]).status_code == 404
    register_domain(reg, trunk, "delta", 4, seed=40)
    wait_until(lambda: served(c, "delta") == 1)
    items = [("delta", im[0]), ("alpha", im[1])]
    same_answers(post(c, items).json()["predictions"], mdl_predict(home, items))
    # a new version of a served domain replaces the old one
    register_domain(reg, trunk, "alpha", 3, seed=41)
    wait_until(lambda: served(c, "alpha") == 2)
    got = post(c, items).json()["predictions"]
    assert got[1]["version"] == 2
    same_answers(got, mdl_predict(home, items))


def test_tampered_version_is_refused_and_the_others_keep_serving(server, monkeypatch):
    from mdl.registry.store import Registry

    c, im, home = server["client"], server["images"], server["home"]
    reg = Registry.open(home)
    trunk = reg.trunks()[0].id
    real_write, originals = reg.artifacts.write, {}

    def corrupted_write(relpath, data):  # the row records the true hash; the file on disk is damaged
        sha, size = real_write(relpath, data)
        originals[relpath] = data
        path = reg.artifacts.abspath(relpath)
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 0xFF
        path.write_bytes(bytes(raw))
        return sha, size

    monkeypatch.setattr(reg.artifacts, "write", corrupted_write)
    register_domain(reg, trunk, "beta", 5, seed=50)        # beta v2: damaged, v1 keeps serving
    register_domain(reg, trunk, "epsilon", 2, seed=51)     # a new domain, damaged: not served
    health = wait_until(lambda: (h := c.get("/healthz").json()) and "epsilon v1" in h["refused"] and h)
    assert health["status"] == "degraded"
    assert "does not match its recorded sha256" in health["refused"]["beta v2"]
    rows = {r["name"]: r for r in c.get("/v1/domains").json()}
    assert rows["beta"]["version"] == 2 and rows["beta"]["served_version"] == 1 and "sha256" in rows["beta"]["refused"]
    res = post(c, [("beta", im[0]), ("gamma", im[1])])
    assert res.status_code == 200 and [p["version"] for p in res.json()["predictions"]] == [1, 1]
    refused = post(c, [("epsilon", im[0])])
    assert refused.status_code == 503 and "epsilon v1" in refused.json()["error"]
    # restoring the files (from a backup, say) brings both versions in without a restart
    for relpath, data in originals.items():
        reg.artifacts.abspath(relpath).write_bytes(data)
    wait_until(lambda: served(c, "epsilon") == 1 and served(c, "beta") == 2)
    assert c.get("/healthz").json()["refused"] == {}
    items = [("beta", im[0]), ("epsilon", im[1])]
    same_answers(post(c, items).json()["predictions"], mdl_predict(home, items))


def test_promoted_version_is_served_without_a_restart(server):
    """`mdl promote` (a pin in the registry) is a reload like any other: the server follows it both ways."""
    from mdl.registry.store import Registry

    c, im, home = server["client"], server["images"], server["home"]
    reg = Registry.open(home)
    trunk = reg.trunks()[0].id
    register_domain(reg, trunk, "zeta", 3, seed=60)
    register_domain(reg, trunk, "zeta", 3, seed=61)
    wait_until(lambda: served(c, "zeta") == 2)
    assert invoke("promote", "zeta", "--version", "1", home=home).code == 0
    wait_until(lambda: served(c, "zeta") == 1)
    items = [("zeta", im[0]), ("alpha", im[1])]
    got = post(c, items).json()["predictions"]
    assert got[0]["version"] == 1
    same_answers(got, mdl_predict(home, items))
    assert invoke("promote", "zeta", "--latest", home=home).code == 0
    wait_until(lambda: served(c, "zeta") == 2)


def test_removed_domain_stops_being_served(server):
    from mdl.registry.store import Registry

    c, im = server["client"], server["images"]
    Registry.open(server["home"]).remove("gamma")
    wait_until(lambda: served(c, "gamma") is None)
    res = post(c, [("gamma", im[0])])
    assert res.status_code == 404 and "unknown domain 'gamma'" in res.json()["error"]
    assert post(c, [("alpha", im[0])]).status_code == 200


def test_serve_cli_errors(tmp_path, server):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        res = invoke("serve", "--port", str(port), "--device", "cpu", home=server["home"])
    assert res.code == 1 and "cannot listen on 127.0.0.1" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = invoke("serve", home=tmp_path / "nowhere")
    assert res.code == 1 and "no mdl registry" in res.stderr


def test_listening_socket_is_tcp_so_responses_are_not_held_back():
    """asyncio sets TCP_NODELAY only on accepted sockets whose proto is IPPROTO_TCP; without it every
    response on a kept-alive connection waited ~40 ms for the client's delayed ACK (found by the bench)."""
    import socket

    from mdl.serve.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        client = socket.create_connection(sock.getsockname())
        conn, _ = sock.accept()
        assert conn.proto == socket.IPPROTO_TCP  # what asyncio checks before setting TCP_NODELAY
        conn.close()
        client.close()
    finally:
        sock.close()
