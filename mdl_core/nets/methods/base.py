"""Method = a rule over the trunk's modules: which ones become per-domain (wrapped, one copy per
domain) and which adapters are added; every other module stays shared and frozen.

A method declares ``parts(layout)``: the module paths it makes per-domain (the head is always one of
them), ``check(layout)``: refuse a trunk it cannot apply to, and optionally ``wrapper_for`` to inject
its own adapter wrapper. The layout vocabulary is :class:`~mdl.core.nets.layout.TrunkLayout`.
"""
from __future__ import annotations

from ..layout import TrunkLayout
from ..wrappers import PerDomain, PerDomainDepthwise, PerDomainHead, PerDomainNorm


class Method:
    name: str = ""
    needs: str | None = None  # a TrunkLayout list that must be non-empty, e.g. "depthwise"
    needs_what = ""           # how to say what is missing
    fusable = False
    gateable = False          # soft-sharing gates mix depthwise filters that every mixed domain owns
    compresses_to: str | None = None  # the method its domains become under cross-domain compression

    def check(self, layout: TrunkLayout, arch: str) -> None:
        if self.needs and not getattr(layout, self.needs):
            raise ValueError(f"method {self.name!r} does not apply to trunk {arch!r}: it has no {self.needs_what}")

    def parts(self, layout: TrunkLayout) -> list[str]:
        return []

    def wrapper_for(self, path: str, layout: TrunkLayout) -> type:
        if path == layout.head:
            return PerDomainHead
        if path in layout.depthwise:
            return PerDomainDepthwise
        if path in layout.norms:
            return PerDomainNorm
        return PerDomain

    def select(self, layout: TrunkLayout) -> dict[str, type]:
        """path -> wrapper class; paths nested inside another selected path are dropped."""
        paths = list(dict.fromkeys(self.parts(layout) + [layout.head]))
        keep = [p for p in paths if not any(p.startswith(q + ".") for q in paths if q != p)]
        return {p: self.wrapper_for(p, layout) for p in keep}


class DenseAdapterMethod(Method):
    """Residual adapters (Rebuffi et al.): an ``adapter`` wrapper on every dense kxk conv (k > 1), plus
    every norm and the head per domain."""

    needs, needs_what = "dense_spatial", "dense kxk convolutions to adapt"
    adapter: type = PerDomain  # the wrapper class a subclass attaches to each dense kxk conv

    def parts(self, layout):
        return layout.dense_spatial + layout.norms

    def wrapper_for(self, path, layout):
        return self.adapter if path in layout.dense_spatial else super().wrapper_for(path, layout)
