"""Screens of the control panel: dashboard, history, request detail, drills, help."""
