"""A multi-domain network as one self-contained file: ONNX (checked with onnxruntime), a ``torch.export``
ExportedProgram (``.pt2``, PyTorch's format; checked after ``torch.export.load``) or TorchScript
(deprecated with ``torch.jit`` in torch 2.14: still written and checked, with a warning).

The exported graph takes ``image`` [B, 3, H, W] (float32, already normalised with the sample's own
domain's mean/std) and ``domain`` [B] (int64, each sample's position in the exported domain list) and
returns ``logits`` [B, max K], ``-inf`` beyond each sample's own class count: the network's indexed
forward (``net(x, domain=idx)``, see :mod:`mdl.core.nets.wrappers`), which has no Python branch on the
data, so one trace serves every batch size and every mix of domains: the graph sorts the batch by
domain and runs each domain's layers on its slice only (bounds computed in the graph), so each image's
work is done once. The domain list, each domain's
preprocessing constants and class names travel in the file's metadata (``mdl.meta``, JSON).

No database here: the caller (``mdl export``) gathers the domains' tensors and records.
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mdl.core.choices import DEPRECATED_FORMATS as DEPRECATED
from mdl.core.choices import EXPORT_FORMATS as FORMATS
from mdl.files import atomic_path

CHECKED_WITH = {"onnx": "onnxruntime (CPU)", "pt2": "torch.export.load", "torchscript": "torch.jit.load"}
MAX_BATCH = 4096  # the .pt2 graph's dynamic batch range is 1..MAX_BATCH
META_KEY = "mdl.meta"
INPUTS = ("image", "domain")
OUTPUT = "logits"
OPSET = 17


class IndexedNet(nn.Module):
    """``forward(image, domain_index)`` of a MultiDomainNet in eval mode (the traced function)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval()

    def forward(self, image: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        return self.net(image, domain=domain)


def example_inputs(num_domains: int, batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random images and a domain index cycling through every domain (a mixed batch)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    idx = torch.arange(batch) % num_domains
    return x, idx[torch.randperm(batch, generator=g)]


def reference_logits(net: nn.Module, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """What PyTorch gives for the batch through the network's ordinary mixed forward (domain names)."""
    names = list(net.domains)
    with torch.no_grad():
        return net.eval()(x, domain=[names[int(i)] for i in idx])


def compare(ref: torch.Tensor, got: torch.Tensor, tol: float) -> float:
    """Max abs difference over the finite logits; raises if the -inf padding differs or a logit is off
    by more than ``tol`` (absolute) + ``tol`` x |logit| (relative)."""
    ref, got = ref.detach().float(), torch.as_tensor(got, dtype=torch.float32).detach()
    if tuple(ref.shape) != tuple(got.shape):
        raise ValueError(f"exported output shape {tuple(got.shape)} != PyTorch's {tuple(ref.shape)}")
    finite = torch.isfinite(ref)
    if not torch.equal(finite, torch.isfinite(got)):
        raise ValueError("exported output disagrees with PyTorch on which logits are padding (-inf)")
    diff = (ref[finite] - got[finite]).abs()
    worst = float(diff.max()) if diff.numel() else 0.0
    bound = tol + tol * ref[finite].abs()
    if bool((diff > bound).any()):
        raise ValueError(f"exported network disagrees with PyTorch: max abs difference {worst:.3g} > {tol:g}")
    return worst


def _export_onnx(model: IndexedNet, x: torch.Tensor, idx: torch.Tensor, path: Path, meta: dict) -> None:
    import onnx

    with torch.no_grad():
        torch.onnx.export(model, (x, idx), str(path), input_names=list(INPUTS), output_names=[OUTPUT],
                          dynamic_axes={"image": {0: "batch"}, "domain": {0: "batch"}, OUTPUT: {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _export_pt2(model: IndexedNet, x: torch.Tensor, idx: torch.Tensor, path: Path, meta: dict) -> None:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        program = torch.export.export(model, (x, idx), dynamic_shapes={"image": {0: batch}, "domain": {0: batch}})
    torch.export.save(program, str(path), extra_files={META_KEY: json.dumps(meta)})


def load_pt2(path: Path):
    """The exported program's module (call it as ``module(image, domain)``)."""
    return torch.export.load(str(path)).module()


def onnx_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # no busy-waiting between runs: spinning threads would take the cores from whatever runs next
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def read_meta(path: Path) -> dict:
    """The ``mdl.meta`` JSON of an exported file (either format)."""
    path = Path(path)
    if path.suffix == ".onnx" or path.read_bytes()[:4] != b"PK\x03\x04":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[META_KEY])
    files = {META_KEY: ""}
    if path.suffix == ".pt2" or _is_pt2(path):
        torch.export.load(str(path), extra_files=files)
    else:
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files[META_KEY])


def _is_pt2(path: Path) -> bool:
    """An ExportedProgram archive (a zip holding ``archive_format``) rather than a TorchScript zip."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("archive_format") for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def _load_exported(fmt: str, path: Path):
    """A callable (image, domain) -> logits over the written file, as its users will load it."""
    if fmt == "onnx":
        sess = onnx_session(path)
        return lambda x, idx: torch.from_numpy(sess.run([OUTPUT], {"image": x.numpy(), "domain": idx.numpy()})[0])
    module = load_pt2(path) if fmt == "pt2" else torch.jit.load(str(path), map_location="cpu")

    def run(x, idx):
        with torch.no_grad():
            return module(x, idx)
    return run


def export_network(net: nn.Module, fmt: str, out: Path, meta: dict[str, Any], *, image_size: int,
                   tol: float = 1e-4, check_batches: tuple[int, ...] = (6, 3), seed: int = 0) -> dict[str, Any]:
    """Write ``net`` (eval, CPU, float32) to ``out`` in ``fmt`` and check the written file against
    PyTorch's mixed forward on seeded random inputs at two batch sizes (the graph's batch is dynamic);
    the file lands at ``out`` (atomically) only if the check passes. Returns what was checked."""
    if fmt not in FORMATS:
        raise ValueError(f"unsupported format {fmt!r}: choose {', '.join(FORMATS)}")
    net = net.cpu().float().eval()
    model = IndexedNet(net)
    d = len(net.domains)
    x, idx = example_inputs(d, max(check_batches[0], d), image_size, seed)
    out = Path(out)
    # torch.export.load wants a name ending in .pt2
    with atomic_path(out, suffix=".tmp.pt2" if fmt == "pt2" else ".tmp") as tmp:
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # tracer notes on shapes fixed at trace time (channels, class counts)
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                _export_onnx(model, x, idx, tmp, meta)
            elif fmt == "pt2":
                _export_pt2(model, x, idx, tmp, meta)
            else:  # torch.jit.script cannot compile the wrappers' name-keyed routing: traced instead
                with torch.no_grad():
                    traced = torch.jit.trace(model, (x, idx), check_trace=False)
                torch.jit.save(traced, str(tmp), _extra_files={META_KEY: json.dumps(meta)})
        seconds = time.perf_counter() - t0
        checks, run = [], _load_exported(fmt, tmp)
        for i, b in enumerate(check_batches):
            cx, cidx = example_inputs(d, max(b, d), image_size, seed + 1 + i)
            worst = compare(reference_logits(net, cx, cidx), run(cx, cidx), tol)
            checks.append({"batch": int(cx.shape[0]), "max_abs_diff": worst})
    return {"file": str(out), "format": fmt, "bytes": out.stat().st_size, "export_seconds": round(seconds, 2),
            "checked_against": CHECKED_WITH[fmt],
            "tolerance": tol, "checks": checks}
