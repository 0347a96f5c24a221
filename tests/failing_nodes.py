"""A node for tests of error output, loaded as `tests.failing_nodes:NamesItselfAndFails`."""
from __future__ import annotations

from pipeline.node import Input, Node


class NamesItselfAndFails(Node):
    """Fails in setup with a message that starts with its own name, as many nodes' errors do."""

    inp = Input("any")

    def setup(self) -> None:
        raise ValueError(f"node '{self.name}': no such device")

    def on_inp(self, packet) -> None:
        """Never reached: setup fails."""
