"""The training commands under torchrun: `session()`, which joins the process group
(mdl.core.distributed), keeps every rank but 0 silent (no progress, no results on stdout) and turns a
failure into one line naming the rank. Outside torchrun it does nothing."""
from __future__ import annotations

import contextlib
import os
import re

from mdl.cli._output import CliError, err, info, out


@contextlib.contextmanager
def session(sync_bn: bool = False):
    """Yields True on the process that reports (rank 0, or the only one)."""
    from mdl.core import distributed as dist

    if not dist.launched():
        if sync_bn:
            info("[yellow]note:[/] --sync-bn only matters under torchrun (several processes)")
        yield True
        return
    dist.init(sync_bn=sync_bn)
    r, w = dist.rank(), dist.world_size()
    saved = err.quiet, out.quiet
    try:
        if r == 0:
            yield True
        else:
            err.quiet = out.quiet = True
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                yield False
        dist.all_ok()  # every rank leaves together, after rank 0 registered: none exits while a peer still talks to it
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:  # becomes the one-line error of this rank
        err.quiet, out.quiet = saved
        raise CliError(_message(exc, r, w), hint=getattr(exc, "hint", None)) from exc
    finally:
        err.quiet, out.quiet = saved
        dist.shutdown()


def _message(exc: BaseException, r: int, w: int) -> str:
    import torch.distributed as tdist

    text = " ".join((str(exc) or type(exc).__name__).split())
    lost = isinstance(exc, getattr(tdist, "DistError", ())) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "timed out",
                            "NCCL", "gloo"))
    if lost:
        detail = re.sub(r"\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", text).split(". ")[0][:160]  # no C++ source location
        return (f"rank {r} of {w}: lost contact with another process of this torchrun job (it failed or was killed); "
                f"nothing was registered ({detail})")
    return f"rank {r} of {w}: {text}"
