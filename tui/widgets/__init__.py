"""Widgets of the control panel: target tiles, route panel, event feed, confirm modal."""
