"""mdl.workflows (the workflows/ folder): the application layer. Each workflow joins the registry and
mdl.core into one thing a user does, and is called alike by the CLI, the server, the benchmarks and the
Python API (mdl.Client); it reports through `events`, never prints.

    train.py     add-domain and pretrain: train, keep the best validation epoch, register
    trunks.py    which trunk a domain trains on; import pretrained trunks and reference checkpoints
    gates.py     soft-sharing gates: train, and the gated network of a registered gate
    evaluate.py  score (the decathlon total, the challenge's results file) and predict
    export.py    one multi-domain network file (ONNX, torch.export .pt2, TorchScript)
    compress.py  cross-domain SVD compression of parallel adapters
    joint.py     joint training of several domains
    demo.py      the whole chain on the bundled mini-decathlon
    catalog.py   the registry's home, and what it holds in the shapes users see (version rows, history)
    common.py    networks from registered artifacts, data opened as a domain was trained, run keys
    events.py    the Reporter interface (started, advanced, finished, note) and its renderings
"""
