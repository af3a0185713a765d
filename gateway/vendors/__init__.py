"""Vendor adapters, chosen by a vendor's `kind`.

The router builds one adapter per configured vendor through `make_adapter`,
so adding a wire format means adding a module and one line here, never
touching the router.
"""

from __future__ import annotations

from gateway.config import VendorConfig
from gateway.vendors.base import Adapter


def make_adapter(vendor: VendorConfig) -> Adapter:
    """The adapter for `vendor.kind` ("openai", "anthropic" or "gemini")."""
    kind = vendor.kind
    if kind == "openai":
        from gateway.vendors.openai import OpenAIAdapter
        return OpenAIAdapter(vendor)
    if kind == "anthropic":
        from gateway.vendors.anthropic import AnthropicAdapter
        return AnthropicAdapter(vendor)
    if kind == "gemini":
        from gateway.vendors.gemini import GeminiAdapter
        return GeminiAdapter(vendor)
    raise ValueError(f"unknown vendor kind {kind!r} for vendor {vendor.name!r}")


__all__ = ["Adapter", "make_adapter"]
