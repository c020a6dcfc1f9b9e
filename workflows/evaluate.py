"""`mdl score` and `mdl predict`: evaluate registered domains, write the challenge results file."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mdl.files import atomic_write
from mdl.registry.store import DomainVersionRecord, Registry
from mdl.workflows.common import NetworkLoader, check_output_file, open_version_data
from mdl.workflows.events import note
from mdl.workflows.gates import gated_network


def _references(reg: Registry, versions, split: str) -> dict[str, float]:
    """Each custom domain's reference accuracy on the split being scored: the domain's recorded reference
    (its `finetune` run's validation accuracy), or on test that run's test accuracy where it measured one
    (a reference from another split than the score's would bias every score by the val/test gap)."""
    out = {}
    for v in versions:
        if v.reference_accuracy is None:
            continue
        out[v.name] = v.reference_accuracy
        if split == "test":
            runs = [r for r in reg.domain_versions(v.name) if r.method == "finetune" and r.removed_at is None
                    and r.accuracy == v.reference_accuracy and r.config.get("test_accuracy") is not None]
            if runs:
                out[v.name] = float(runs[-1].config["test_accuracy"])
    return out


def score(reg: Registry, *, split: str = "val", results: Path | None = None, device: str = "auto",
          workers: int = 0, on_bad_image: str = "skip") -> dict[str, Any]:
    """Accuracy of every current domain version (with its gate where the gate helped on validation),
    recorded as evaluations (only once everything succeeded), and the decathlon score of the lot.

    ``results``: the challenge's submission file: every test image of every decathlon-layout domain (and
    nothing else); a domain whose images could not all be read fails it, naming the missing ids."""
    from mdl.core.data import make_loader
    from mdl.core.scoring import decathlon_facts, score_domains
    from mdl.core.training import DeviceSetup, predict_logits

    from mdl.core.choices import SCORE_SPLITS

    if split not in SCORE_SPLITS:
        raise ValueError(f"unknown --split {split!r}: choose {' or '.join(SCORE_SPLITS)}")
    if results is not None:
        results = check_output_file(results, "--results")
    versions = reg.current_versions()
    if not versions:
        raise ValueError(f"no domains registered in {reg.home} (next: `mdl add-domain NAME --data SRC`, which imports the default trunk on first use)")
    dev = DeviceSetup.resolve(device)
    loader = NetworkLoader(reg)
    rows, accuracies, submission, evaluations, in_submission, official_names = [], {}, [], [], [], {}
    for v in versions:
        if not v.data.get("source"):  # an imported trunk's own classifier: its data never came through mdl
            rows.append({"name": v.name, "version": v.version, "method": v.method, "accuracy": None, "gate": None,
                         "num_samples": 0, "note": "no data recorded (the imported trunk's own classifier)"})
            continue
        dd = open_version_data(v, on_bad_image=on_bad_image)
        if split not in dd.splits or len(dd.splits[split]) == 0:
            rows.append({"name": v.name, "version": v.version, "method": v.method, "accuracy": None, "gate": None,
                         "num_samples": 0, "note": f"its data has no {split} split"})
            continue
        trained_on = v.config.get("trained_on", "train")
        if split in trained_on.split("+"):  # not held out: no accuracy, no score, no evaluation
            rows.append({"name": v.name, "version": v.version, "method": v.method, "accuracy": None, "gate": None,
                         "num_samples": 0, "trained_on": trained_on,
                         "note": f"trained on {trained_on}: its {split} split is not held out"})
            if dd.kind == "decathlon" and results is not None:
                raise ValueError(f"{v.name} v{v.version} was trained on its {split} split; a submission of {split} "
                                 "predictions would be meaningless")
            continue
        gate = reg.current_gate(v.id)
        use_gate = gate is not None and gate.accuracy is not None and gate.base_accuracy is not None \
            and gate.accuracy > gate.base_accuracy
        net = gated_network(reg, gate, loader) if use_gate else loader.network(v.trunk, v.method, [v])
        dev.prepare(net)
        logits, labels = predict_logits(net, make_loader(dd, split, 256, train=False, workers=workers), dev,
                                         domain=v.name, use_gate=use_gate)
        predictions = logits.argmax(1)
        labelled = labels >= 0
        n = int(labelled.sum())
        acc = 100.0 * (predictions[labelled] == labels[labelled]).float().mean().item() if n else math.nan
        if n:
            accuracies[v.name] = acc
            evaluations.append(dict(domain_version_id=v.id, split=split, accuracy=acc, num_samples=n,
                                    gate_id=gate.id if use_gate else None))
        if dd.kind == "decathlon":
            official_names[v.name] = dd.name
            if results is not None:  # the challenge takes its own domains' images only, every one of them
                missing = dd.skipped_ids.get(split, [])
                if missing:
                    shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
                    raise ValueError(f"{v.name}: {len(missing)} {split} image(s) could not be read (ids {shown}); "
                                     "a submission must cover every image: fix or restore them")
                submission += _results_entries(v, dd, split, predictions)
                in_submission.append(v.name)
        rows.append({"name": v.name, "version": v.version, "method": v.method, "accuracy": acc if n else None,
                     "trained_on": trained_on, "gate": (f"{gate.placement} (v{gate.version})" if use_gate else
                              "not used: no gain on val" if gate is not None else None),
                     "num_samples": n})
    references = _references(reg, versions, split)
    total, scored = score_domains(accuracies, references, official_names)
    by_name = {d.name: d for d in scored}
    for row in rows:
        d = by_name.get(row["name"])
        row["score"] = d.score if d else None
        row["baseline"] = d.baseline if d else None
        row["score_basis"] = d.reason if d else row.pop("note", "no labels in this split")
    report = {"split": split, "total": total, "domains": rows}
    if results is not None:
        challenge = list(decathlon_facts()["domains"])
        official = [official_names[n] for n in in_submission]
        report["results"] = {"file": str(results), "predictions": len(submission), "domains": in_submission,
                             "trained_on": {r["name"]: r.get("trained_on") for r in rows if r["name"] in in_submission},
                             "missing_challenge_domains": [d for d in challenge if d not in official]}
        atomic_write(results, json.dumps(submission))
        # The challenge's file is a bare list; what produced it (versions, splits trained on) goes beside it.
        by_row = {r["name"]: r for r in rows}
        side = results.with_name(f"{results.name}.mdl.json")
        atomic_write(side, json.dumps({"split": split, "results": results.name, "domains": {
            n: {"version": by_row[n]["version"], "method": by_row[n]["method"], "trained_on": by_row[n]["trained_on"]}
            for n in in_submission}}, indent=1))
        report["results"]["provenance_file"] = str(side)
        note(f"Wrote {len(submission)} predictions for {len(in_submission)} decathlon domain(s) to {results}")
        if report["results"]["missing_challenge_domains"]:
            note(f"the challenge expects all 10 domains; missing: "
                 f"{', '.join(report['results']['missing_challenge_domains'])}", "note")
    for e in evaluations:  # only now: a failed score leaves the registry as it was
        reg.add_evaluation(**e)
    return report


def _results_entries(v: DomainVersionRecord, dd, split: str, predictions) -> list[dict[str, int]]:
    """The challenge's results.json rows: {image_id, category_id} with official category ids."""
    # Decathlon and builtin sources carry official-style ids; an ImageFolder's label index is its id.
    category_ids = v.data.get("category_ids") or dd.category_ids or list(range(v.num_classes))
    ids = dd.image_ids[split]
    return [{"image_id": int(i), "category_id": int(category_ids[int(p)])} for i, p in zip(ids, predictions)]


def predict(reg: Registry, default_domain: str, images: list[str], *, top_k: int = 5,
            device: str = "auto") -> list[dict[str, Any]]:
    """Classify image files (`mdl predict`). An IMAGE written `domain@path` uses that domain."""
    pairs = [(img.split("@", 1) if "@" in img and not Path(img).exists() else (default_domain, img)) for img in images]
    known = {v.name for v in reg.current_versions()}
    for img, (name, path) in zip(images, pairs):  # name@path with neither part real: say both
        if "@" in img and name not in known and not Path(path).is_file():
            raise FileNotFoundError(f"image not found: {img} (nor is {name!r} a registered domain for DOMAIN@IMAGE)")
    versions = current_of(reg, [name for name, _ in pairs])
    for _, path in pairs:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image not found: {path}")
    return classify(reg, [(name, path) for name, path in pairs], top_k=top_k, device=device,
                    labels=[path for _, path in pairs], versions=versions)


def current_of(reg: Registry, names) -> dict[str, DomainVersionRecord]:
    """The current versions of ``names`` (each once), which must share one network: one trunk, one method."""
    versions = {name: reg.domain_version(name) for name in dict.fromkeys(names)}
    if len({v.trunk.id for v in versions.values()}) > 1 or len({v.method for v in versions.values()}) > 1:
        raise ValueError("images for domains on different trunks or methods cannot share one pass; run them separately")
    return versions


def network_of(reg: Registry, versions: dict[str, DomainVersionRecord]):
    """The one network holding ``versions`` (as current_of gives them)."""
    first = next(iter(versions.values()))
    return NetworkLoader(reg).network(first.trunk, first.method, versions.values())


def classify(reg: Registry, items: list[tuple[str, Any]], *, top_k: int = 5, device: str = "auto",
             labels: list[str] | None = None, versions: dict | None = None) -> list[dict[str, Any]]:
    """Classify ``items``, (domain, image) pairs; an image is a path, a PIL image, bytes or a pixel
    tensor (mdl.core.data.transforms.as_rgb). Every image of every domain goes through one network in
    one (stacked, for dw) pass per input size. Rows as `mdl predict --json` prints them; ``labels`` name
    the images in them (default: their positions)."""
    import torch

    from mdl.core.data.dataset import preprocess
    from mdl.core.data.transforms import as_rgb
    from mdl.core.training import DeviceSetup

    if not items:
        raise ValueError("no images given")
    labels = labels or [f"image {i}" for i in range(len(items))]
    versions = versions or current_of(reg, [name for name, _ in items])
    net = network_of(reg, versions)
    batches = []
    for (name, image), label in zip(items, labels):
        batches.append(preprocess([as_rgb(image, label)], versions[name].data))
    dev = DeviceSetup.resolve(device)
    dev.prepare(net).eval().assume_static()  # nothing edits this network's tensors: no per-forward check
    # Domains preprocessed to different input sizes (the references' 72 px no-crop domains beside 64 px
    # crops) cannot share a tensor: one stacked pass per input size.
    rows: list = [None] * len(items)
    for size in dict.fromkeys(b.shape[-1] for b in batches):
        ix = [i for i, b in enumerate(batches) if b.shape[-1] == size]
        with torch.no_grad(), dev.autocast():
            logits = net(dev.batch(torch.cat([batches[i] for i in ix])), domain=[items[i][0] for i in ix]).float().cpu()
        for i, row in zip(ix, logits):
            rows[i] = row
    return [{"image": label, "domain": name, "version": versions[name].version,
             "top": top_classes(row, versions[name], top_k)} for (name, _), label, row in zip(items, labels, rows)]


def top_classes(row, v: DomainVersionRecord, top_k: int) -> list[dict[str, Any]]:
    """A sample's top-k classes by probability (softmax over the version's own classes of its padded
    logits row), named from the registry: what `mdl predict` and `mdl serve` answer."""
    probs = row[: v.num_classes].float().softmax(0)
    top = probs.topk(min(top_k, v.num_classes))
    return [{"class": str(v.classes[i]), "index": int(i), "probability": round(float(p), 4)}
            for p, i in zip(top.values, top.indices)]
