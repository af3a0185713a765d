"""Patchbay's Textual control panel (`patchbay tui`).

It talks to a gateway only through the admin API (tui/client.py), never by
importing `gateway` or `store`, so it can attach to any gateway it can reach.
Entry point: `tui.app.run_tui(admin_url, token, readonly, refresh) -> int`.
"""
