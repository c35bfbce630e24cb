"""Undoing a training step that failed or produced NaN or infinity.

Non-finite numbers never end up in the weights: :func:`guarded_step` checks every step
(loss, network weights and statistics, optimiser state) and gives the network and
optimiser back the state they had before a step that produced NaN or infinity, or that
raised (Ctrl+C included), so a half-applied update is never kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch


def training_tensors(
    network: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> list[torch.Tensor]:
    """The network's parameters and buffers, then the optimiser's state tensors.

    The same tensor objects from one step to the next (training updates them in place),
    except that the optimiser's state appears at its first step.
    """
    tensors = [*network.parameters(), *network.buffers()]
    if optimizer is not None:
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                state = optimizer.state.get(parameter, {})
                tensors.extend(v for v in state.values() if isinstance(v, torch.Tensor))
    return tensors


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every floating-point element of ``tensors`` is finite (one device sync)."""
    checks = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


class StepSnapshot:
    """Copies of the network's and optimiser's tensors as they were before a step.

    The copies are refreshed in place before every step (a few milliseconds for the
    small network, no allocation after the first steps), so a failed or non-finite step
    can be undone exactly.
    """

    def __init__(self) -> None:
        self._sources: list[torch.Tensor] = []
        self._copies: list[torch.Tensor] = []
        self._optimizer_keys: set[int] = set()

    def take(self, network: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        sources = training_tensors(network, optimizer)
        with torch.no_grad():
            if len(sources) != len(self._sources) or any(
                a is not b for a, b in zip(sources, self._sources, strict=True)
            ):
                self._copies = [t.detach().clone() for t in sources]
            else:
                for copy_, source in zip(self._copies, sources, strict=True):
                    copy_.copy_(source)
        self._sources = sources
        # Parameters with optimiser state: a step may create it (Adam's first step).
        self._optimizer_keys = {id(p) for p in optimizer.state}

    def restore(self, network: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        # State the step created did not exist before it: drop it (a fresh optimiser).
        for parameter in [p for p in optimizer.state if id(p) not in self._optimizer_keys]:
            del optimizer.state[parameter]
        with torch.no_grad():
            for source, copy_ in zip(self._sources, self._copies, strict=True):
                source.copy_(copy_)


def guarded_step(
    run_step: Callable[[], float],
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    snapshot: StepSnapshot,
) -> tuple[float, str | None]:
    """Run ``run_step`` (one optimisation step returning its loss), undone when it fails.

    Returns
    -------
    loss : float
    failure : str or None
        What became non-finite (the step was undone), else None.

    Raises
    ------
    BaseException
        Whatever ``run_step`` raised (Ctrl+C included), after the same undo.
    """
    snapshot.take(network, optimizer)
    try:
        loss = run_step()
    except RuntimeError as error:
        snapshot.restore(network, optimizer)
        # torch refuses an update it cannot represent in float32 (Adam's first steps
        # divide the learning rate by a small bias correction).
        if "overflow" not in str(error):
            raise
        return math.nan, "the update became infinite"
    except BaseException:
        snapshot.restore(network, optimizer)
        raise
    if math.isfinite(loss) and all_finite(training_tensors(network, optimizer)):
        return loss, None
    snapshot.restore(network, optimizer)
    if math.isfinite(loss):
        return loss, "the weights became NaN or infinite"
    return loss, "the loss became " + ("NaN" if math.isnan(loss) else "infinite")
