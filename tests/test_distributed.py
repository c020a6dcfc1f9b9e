"""Issue 13: `mdl pretrain`, `add-domain` and `gate-train` under torchrun (DDP, gloo on CPU).

The equality checks compare a 2-process `--sync-bn` run with the same run in one plain `mdl` process at
the same global batch. They are exact up to float rounding because nothing else differs:
  * the domains are svhn and gtsrb, which take no random crop or flip (centre crop only), so no
    augmentation randomness differs between ranks and the single process;
  * the global batch is the whole training split (64 / 48 images; 32 / 24 per rank), so every step sees
    the same samples whatever the shuffle order (the single process shuffles with its DataLoader, the
    ranks with DistributedSampler) and DistributedSampler adds no padding (even sizes);
  * SyncBatchNorm gives each rank the batch-norm statistics of the global batch, and DDP averages the
    ranks' gradients of their per-rank mean losses = the gradient of the global mean loss.
Measured: max |difference| 1e-6 to 5e-6 over every tensor (2 epochs, lr 0.05), the size of the
difference between two single-process runs with 1 and 2 threads; without --sync-bn it is 0.14
(checked below, so the comparison can fail)."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Result, invoke
from mdl.core import distributed, threads
from PIL import Image

TOY = ["--width", "0.25", "--image-size", "16", "--device", "cpu", "--threads", "1", "--lr", "0.05"]
RUN = ["--device", "cpu", "--threads", "1", "--lr", "0.05"]
TOL = {"atol": 2e-5, "rtol": 1e-4}  # measured differences: 1e-6 to 5e-6


# --- helpers -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n: int, *args: str, home: Path, env: dict | None = None, timeout: int = 240) -> Result:
    """`python -m torch.distributed.run --nproc_per_node N -m mdl ARGS --home HOME` (gloo, CPU)."""
    full_env = {**os.environ, "MDL_DEBUG": "0", "COLUMNS": "200", "MDL_DIST_TIMEOUT": "60", **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "mdl", *args, "--home", str(home)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def decathlon(root: Path) -> Path:
    """svhn (4 classes, 64/20/12) and gtsrb (3 classes, 48/18/12): decathlon layout, 18 px images."""
    (root / "annotations").mkdir(parents=True)
    for domain, prefix, k_classes, sizes, seed in (("svhn", 8, 4, (64, 20, 12), 1), ("gtsrb", 5, 3, (48, 18, 12), 2)):
        rng = np.random.default_rng(seed)
        cats = [{"id": prefix * 10**7 + k + 1, "name": f"c{k}"} for k in range(k_classes)]
        next_id = prefix * 10**7 + 1
        for split, n in zip(("train", "val", "test"), sizes):
            images, anns = [], []
            for i in range(n):
                k = i % k_classes
                fname = f"data/{domain}/{split}/{i:05d}.png"
                (root / fname).parent.mkdir(parents=True, exist_ok=True)
                a = rng.integers(0, 86, (18, 18, 3)) + np.array([60 * k, 120 - 40 * k, 30 * k])
                Image.fromarray(a.astype(np.uint8)).save(root / fname)
                images.append({"id": next_id, "width": 18, "height": 18, "file_name": fname})
                anns.append({"id": next_id, "image_id": next_id, "category_id": cats[k]["id"]})
                next_id += 1
            doc = {"images": images, "annotations": anns, "categories": cats}
            (root / "annotations" / f"{domain}_{split}.json").write_text(json.dumps(doc))
    return root


def registry_digest(home: Path) -> str:
    """The registry proper: database and artifacts (run folders and the lock are not registrations)."""
    digest = hashlib.sha256()
    for p in sorted([home / "registry.db", *(home / "artifacts").rglob("*")]):
        if p.is_file():
            digest.update(p.relative_to(home).as_posix().encode())
            digest.update(p.read_bytes())
    return digest.hexdigest()


def tensors(home: Path, name: str, version: int) -> tuple[dict, dict]:
    from mdl.registry.store import Registry

    reg = Registry.open(home)
    v = reg.domain_version(name, version)
    return reg.load_tensors(v.artifact), v.config


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, t in a.items():
        torch.testing.assert_close(t.float(), b[k].float(), **TOL, msg=lambda m, k=k: f"{k}: {m}")


# --- end to end through torchrun ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return decathlon(tmp_path_factory.mktemp("ddp-data") / "decathlon")


@pytest.fixture(scope="module")
def homes(tmp_path_factory, data) -> dict:
    """The same pretraining on 2 processes (--sync-bn, batch 64 = 32 per rank) and in one plain process."""
    base = tmp_path_factory.mktemp("ddp")
    homes = {"ddp": base / "ddp", "one": base / "one"}
    for h in homes.values():
        assert invoke("init", home=h).code == 0
    args = ["pretrain", "--data", str(data), "--name", "svhn", "--epochs", "2", "--batch-size", "64", *TOY, "--json"]
    res = torchrun(2, *args, "--sync-bn", home=homes["ddp"])
    assert res.code == 0, res.stderr[-3000:]
    homes["ddp_stdout"] = res.stdout
    res = invoke(*args, home=homes["one"])
    assert res.code == 0, res.stderr
    return homes


@pytest.mark.slow
def test_pretrain_on_two_processes_registers_once_and_equals_one_process(homes):
    out = json.loads(homes["ddp_stdout"])  # one JSON document: only rank 0 reports
    assert out["trunk"] == "resnet26_dw:v1" and out["domain"]["version"] == 1
    listed = invoke("list", "--json", home=homes["ddp"]).json()
    assert [(r["name"], r["version"]) for r in listed] == [("svhn", 1)]
    from mdl.registry.store import Registry

    trunks = [Registry.open(h).trunks() for h in (homes["ddp"], homes["one"])]
    assert [len(t) for t in trunks] == [1, 1]
    ddp_trunk, one_trunk = (Registry.open(h).load_tensors(t[0].artifact) for h, t in zip((homes["ddp"], homes["one"]), trunks))
    assert_same(ddp_trunk, one_trunk)
    ddp_src, _ = tensors(homes["ddp"], "svhn", 1)
    one_src, _ = tensors(homes["one"], "svhn", 1)
    assert_same(ddp_src, one_src)
    assert trunks[0][0].config["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch_size": 64,
                                                 "per_rank_batch_size": 32, "sync_bn": True}
    assert not list((homes["ddp"] / "runs").glob("*/state.json"))  # the finished run's checkpoint is gone


@pytest.mark.slow
def test_add_domain_on_two_processes_equals_one_process_and_needs_sync_bn(homes, data):
    home = homes["ddp"]
    args = ["add-domain", "gtsrb", "--data", str(data), "--epochs", "2", "--batch-size", "48", *RUN, "--json"]
    res = torchrun(2, *args, "--sync-bn", home=home)
    assert res.code == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["version"] == 1
    res = invoke(*args, home=home)  # the same run in one plain process: v2
    assert res.code == 0, res.stderr
    res = torchrun(2, *args, home=home)  # 2 processes, each normalising its own half batch: v3
    assert res.code == 0, res.stderr[-3000:]
    (ddp, cfg), (one, one_cfg), (nosync, _) = (tensors(home, "gtsrb", v) for v in (1, 2, 3))
    assert_same(ddp, one)
    assert max_diff(nosync, one) > 1e-3  # the comparison can tell: per-rank BN statistics differ
    assert cfg["distributed"]["per_rank_batch_size"] == 24 and one_cfg["distributed"]["world_size"] == 1
    assert [h["val_accuracy"] for h in cfg["history"]] == [h["val_accuracy"] for h in one_cfg["history"]]
    assert [(r["name"], r["version"]) for r in invoke("list", "--json", home=home).json()] == [("svhn", 1), ("gtsrb", 3)]


@pytest.mark.slow
def test_gate_train_on_two_processes(homes):
    res = torchrun(2, "gate-train", "--domain", "gtsrb", "--placement", "late", "--epochs", "1", "--batch-size", "16",
                   "--device", "cpu", "--threads", "1", "--json", home=homes["ddp"])
    assert res.code == 0, res.stderr[-3000:]
    rows = json.loads(res.stdout)
    assert [(r["name"], r["gate"]) for r in rows] == [("gtsrb", 1)]


@pytest.mark.slow
def test_killed_rank_registers_nothing_and_resume_continues(homes, data):
    home = homes["one"]
    before = registry_digest(home)
    args = ["add-domain", "killed", "--domain", "gtsrb", "--data", str(data), "--epochs", "2", "--batch-size", "16",
            *RUN, "--json"]
    # 48 images / 16 = 3 steps per epoch: rank 1 dies at its 5th step, after rank 0 wrote epoch 1's checkpoint
    res = torchrun(2, *args, home=home, env={"MDL_TEST_KILL_RANK": "1@5"})
    assert res.code != 0
    assert res.stdout == ""
    assert "nothing was registered" in res.stderr or "exitcode  : -9" in res.stderr
    assert registry_digest(home) == before
    assert invoke("show", "killed", home=home).code == 1
    res = invoke(*args, "--resume", home=home)  # a checkpoint of the 2-process run, resumed in one process
    assert res.code == 0, res.stderr
    shown = invoke("show", "killed", "--json", home=home).json()["versions"]
    assert len(shown) == 1 and shown[0]["config"]["resumed_from_epoch"] == 1


@pytest.mark.slow
def test_failing_rank_ends_the_run_with_one_line_per_rank(homes, tmp_path):
    res = torchrun(2, "add-domain", "nope", "--data", str(tmp_path), "--device", "cpu", "--threads", "1",
                   home=homes["one"])
    assert res.code != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors and all("rank" in line for line in errors), res.stderr[-2000:]


# --- single process: everything is a no-op ------------------------------------------------------------


def test_single_process_is_untouched(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not distributed.launched() and not distributed.init(sync_bn=True) and not distributed.active()
    net = torch.nn.Linear(2, 2)
    assert distributed.wrap(net) is net
    loaders = (object(), object())
    assert distributed.shard_loaders(*loaders, seed=0) == loaders
    assert distributed.sum_over_ranks(3, 4.5) == (3, 4.5)
    assert distributed.sum_over_shards(torch.utils.data.DataLoader([1, 2]), 2, 1) == (2, 1)
    assert distributed.describe(64) == {"world_size": 1, "backend": None, "global_batch_size": 64,
                                        "per_rank_batch_size": 64, "sync_bn": False}
    distributed.shutdown()
    distributed.exit_process(0)  # never joined a group: returns, the process goes on
    assert not distributed._state["joined"]


EXIT_SCRIPT = """
import atexit, sys
from mdl.core import distributed
atexit.register(lambda: print("exit handler ran", flush=True))
distributed._state["joined"] = True  # as after shutdown() in a torchrun rank
sys.stdout.write("result without newline")  # buffered: must still be written
sys.stderr.write("note on stderr")
distributed.exit_process(3)
print("not reached")
"""


def test_a_torchrun_rank_exits_without_teardown_but_runs_handlers_and_flushes():
    """What every torchrun rank does at the end (cli/app.py): exit handlers, flushed output, its exit code."""
    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3
    assert proc.stdout == "result without newlineexit handler ran\n" and proc.stderr == "note on stderr"


def test_padding_of_the_evaluation_sampler_is_masked():
    from torch.utils.data import DataLoader, DistributedSampler

    ds = list(range(5))
    seen = []
    for r in range(2):  # 5 samples on 2 ranks: rank 1 gets 1, 3 and a repeat of 0
        loader = DataLoader(ds, batch_size=4, sampler=DistributedSampler(ds, num_replicas=2, rank=r, shuffle=False))
        got = torch.cat(list(loader))
        mask = distributed.real_samples(loader, len(got))
        seen += got[mask].tolist()
    assert sorted(seen) == ds


def test_batch_size_must_split_over_the_ranks(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert distributed.per_rank_batch(64) == 32
    with pytest.raises(ValueError, match="global batch"):
        distributed.per_rank_batch(33)


def test_cpu_sync_bn_keeps_the_layer_alone():
    """Single process: the converted layers compute what they computed (timm's BatchNormAct2d keeps
    its activation), with the same state-dict keys."""
    from timm.layers import BatchNormAct2d

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), BatchNormAct2d(4))
    x = torch.randn(6, 3, 8, 8)
    ref = net(x)
    keys = list(net.state_dict())
    distributed._cpu_sync_bn(net)
    assert type(net[1]).__name__ == "CpuSyncBatchNorm2d" and isinstance(net[2], BatchNormAct2d)
    torch.testing.assert_close(net(x), ref)
    assert list(net.state_dict()) == keys


def test_local_ranks_share_the_cores(tmp_path, monkeypatch):
    monkeypatch.setenv("MDL_RUNTIME_DIR", str(tmp_path / "jobs"))
    monkeypatch.setattr(threads, "_state", {"file": None, "pinned": None, "last": 0.0})
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # a rank that starts before its peer registered
    before = torch.get_num_threads()
    try:
        assert threads.start() == 2
    finally:
        threads.stop()
        torch.set_num_threads(before)


def test_help_states_the_batch_size_semantic():
    res = invoke("add-domain", "--help")
    assert "Global batch size" in res.stdout and "--sync-bn" in res.stdout
