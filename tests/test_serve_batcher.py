"""The dynamic batcher and the model pool without HTTP: batches of at most max_batch, one forward pass
per batch for mixed domains, items re-preprocessed when a new version changed the statistics, a domain
gone between request and batch answered with DomainGone."""
from __future__ import annotations

import pytest
import torch
from _serve_helpers import make_registry, png_bytes


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from mdl.core.training import DeviceSetup
    from mdl.serve.pool import ModelPool

    reg = make_registry(tmp_path_factory.mktemp("batcher") / "home", {"alpha": 3, "beta": 5})
    p = ModelPool(reg, DeviceSetup.resolve("cpu"), poll_s=0)
    assert p.refresh() and not p.refresh()  # the second poll finds nothing new: same snapshot
    return p


def item(pool, domain, seed, prep=None):
    from mdl.core.data.dataset import eval_batch
    from mdl.core.data.transforms import decode_rgb_bytes
    from mdl.serve.batcher import Item

    raw, _ = decode_rgb_bytes(png_bytes(seed))
    prep = prep or pool.snapshot.domains[domain].preprocessing
    return Item(domain=domain, raw=raw, x=eval_batch([raw], *prep)[0], prep=prep, top_k=2)


def run(pool, items, max_batch):
    from mdl.serve.batcher import Batcher
    from mdl.serve.metrics import Metrics

    metrics = Metrics()
    b = Batcher(pool, pool.dev, metrics, max_batch=max_batch, max_wait_s=0.05)
    futures = b.submit(items)  # all queued before the worker starts: batch composition is deterministic
    b.start()
    try:
        results = [f.exception(timeout=60) or f.result() for f in futures]
    finally:
        b.stop()
    sizes = metrics.batch_size.collect()[0].samples
    count = next(s.value for s in sizes if s.name.endswith("_count"))
    passes = metrics.passes.collect()[0].samples[0].value
    return results, count, passes


def test_batches_hold_at_most_max_batch_and_one_pass_each(pool):
    items = [item(pool, d, i) for i, d in enumerate(["alpha", "beta", "beta", "alpha", "beta"])]
    results, batches, passes = run(pool, items, max_batch=2)
    assert (batches, passes) == (3, 3)
    one, _, _ = run(pool, [item(pool, d, i) for i, d in enumerate(["alpha", "beta", "beta", "alpha", "beta"])], 16)
    for (v1, top1), (v2, top2) in zip(results, one):  # batch composition does not change answers
        assert v1.name == v2.name and [t["class"] for t in top1] == [t["class"] for t in top2]
        assert all(abs(a["probability"] - b["probability"]) <= 1e-4 for a, b in zip(top1, top2))


def test_stale_preprocessing_is_redone_and_gone_domains_fail_alone(pool):
    from mdl.serve.batcher import DomainGone

    good = item(pool, "beta", 7)
    stale = item(pool, "beta", 7, prep=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 18, 16))  # made for other statistics
    gone = item(pool, "alpha", 8)
    gone.domain = "removed-meanwhile"
    (v1, top1), (v2, top2), err = run(pool, [good, stale, gone], max_batch=8)[0]
    assert v1.version == v2.version == 1 and top1 == top2 and torch.equal(good.x, stale.x)
    assert isinstance(err, DomainGone) and "removed-meanwhile" in str(err)
