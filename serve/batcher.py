"""Dynamic batching: one worker thread owns the networks; requests enqueue already-decoded items.

The worker takes the first waiting item, then collects more until it holds ``max_batch`` items or
``max_wait_s`` has passed since that first item was enqueued (items that waited longer while a batch ran
are taken at once, up to ``max_batch``). It reads the pool's snapshot once per batch, so a registry
reload lands between batches; it runs ONE stacked mixed-domain forward per network in the batch (one
network serves every domain of a trunk and method: usually one pass for the whole batch) and resolves
each item's future with its top-k classes. Bad input never gets here: requests are validated and
decoded before they enqueue.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from mdl.core import threads
from mdl.core.data.dataset import eval_batch
from mdl.workflows.evaluate import top_classes

log = logging.getLogger("mdl.serve")
_STOP = object()


class DomainGone(Exception):
    """The item's domain stopped being served between its request and its batch (HTTP 410: it was
    removed, a client error to retry elsewhere), or the server is shutting down (503)."""

    def __init__(self, message: str, status: int = 410):
        super().__init__(message)
        self.status = status


@dataclass
class Item:
    domain: str
    raw: torch.Tensor            # the decoded uint8 image [3, H, W]
    x: torch.Tensor              # preprocessed [3, crop, crop] for the version current at request time
    prep: tuple                  # the preprocessing x was made with (mean, std, image_size, crop)
    top_k: int
    future: Future = field(default_factory=Future)
    t: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(self, pool, dev, metrics, max_batch: int = 32, max_wait_s: float = 0.005):
        if max_batch < 1:
            raise ValueError(f"--max-batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"--max-wait-ms must be >= 0, got {max_wait_s * 1000:g}")
        self.pool, self.dev, self.metrics = pool, dev, metrics
        self.max_batch, self.max_wait_s = int(max_batch), float(max_wait_s)
        self.queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mdl-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.queue.put(_STOP)
            self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, items: list[Item]) -> list[Future]:
        for it in items:
            self.queue.put(it)
        return [it.future for it in items]

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        stop = False
        while not stop:
            first = self.queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = first.t + self.max_wait_s
            while len(batch) < self.max_batch:
                wait = deadline - time.monotonic()
                try:
                    item = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            try:
                self.run_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - never leave a request hanging; keep serving
                log.exception("batch failed")
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(exc)
        while True:  # answer whatever is still queued
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and not item.future.done():
                item.future.set_exception(DomainGone("the server is shutting down", status=503))

    def run_batch(self, batch: list[Item]) -> None:
        threads.rebalance()  # another mdl job may have started or ended
        snap = self.pool.snapshot  # once per batch: a reload lands between batches
        groups: dict[tuple, list] = {}
        for it in batch:
            s = snap.domains.get(it.domain)
            if s is None:
                it.future.set_exception(DomainGone(f"domain {it.domain!r} stopped being served while the request waited"))
                continue
            if s.preprocessing != it.prep:  # a new version with other statistics arrived meanwhile
                it.x, it.prep = eval_batch([it.raw], *s.preprocessing)[0], s.preprocessing
            groups.setdefault((s.group, tuple(it.x.shape)), []).append((it, s))
        done = 0
        for (group, _), members in groups.items():
            net = snap.networks[group]
            try:
                x = torch.stack([it.x for it, _ in members])
                with torch.no_grad(), self.dev.autocast():
                    logits = net(self.dev.batch(x), domain=[s.name for _, s in members]).float().cpu()
                for (it, s), row in zip(members, logits):
                    it.future.set_result((s.version, top_classes(row, s.version, it.top_k)))
                done += len(members)
            except Exception as exc:  # noqa: BLE001 - this group's items fail, the batch's others go on
                log.exception("forward pass failed")
                for it, _ in members:
                    if not it.future.done():
                        it.future.set_exception(exc)
        self.metrics.observe_batch(done, len({s.name for ms in groups.values() for _, s in ms}), len(groups))
