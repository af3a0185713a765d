"""The one y/n question every dangerous action asks first."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from tui import fmt


class ConfirmModal(ModalScreen[bool]):
    """Ask y/n; optionally take a free-text reason (`r` to type it, enter = yes).

    The result is a bool; the typed reason is read from `.reason` by the caller.
    """

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
        Binding("r", "reason", "Reason", id="confirm.reason",
                tooltip="Type an optional reason (enter confirms)"),
    ]

    def __init__(self, title: str, body: Text | str, *, ask_reason: bool = False,
                 yes_label: str = "Yes", danger: bool = True) -> None:
        super().__init__()
        self._title = title
        self._body = body
        self._ask_reason = ask_reason
        self._yes_label = yes_label
        self._danger = danger
        self.reason = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box") as box:
            box.border_title = self._title
            body = fmt.mono(self._body) if isinstance(self._body, Text) else self._body
            yield Static(body, id="confirm-body")
            if self._ask_reason:
                yield Input(placeholder="reason (optional): r to type, enter to confirm",
                            id="confirm-reason", compact=True)
            with Horizontal(id="confirm-buttons"):
                yield Button(f"{self._yes_label} (y)", id="confirm-yes", compact=True,
                             variant="error" if self._danger else "primary")
                yield Button("No (n/esc)", id="confirm-no", compact=True)

    def on_mount(self) -> None:
        tune = getattr(self.app, "tune_inputs", None)
        if tune is not None:
            tune(self)
        self.query_one("#confirm-no", Button).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "reason":
            return self._ask_reason
        return True

    def action_answer(self, yes: bool) -> None:
        if self._ask_reason:
            self.reason = self.query_one("#confirm-reason", Input).value.strip()
        self.dismiss(yes)

    def action_reason(self) -> None:
        if self._ask_reason:
            self.query_one("#confirm-reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_answer(True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_answer(event.button.id == "confirm-yes")
