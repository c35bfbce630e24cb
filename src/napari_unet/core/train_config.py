"""The settings of a training run (:class:`TrainConfig`), and what changes when a paused
run resumes with other settings (:class:`ConfigUpdate`, :func:`config_update`).

``Trainer`` below is :class:`napari_unet.core.train.Trainer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np

from .augment import AugmentConfig
from .calibration import PixelSize, parse_pixel_size
from .errors import InputError
from .holdout_spec import parse_holdout

#: Largest float32: the optimisers cannot apply a larger learning rate.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class TrainConfig:
    """Options of a training run.

    Parameters
    ----------
    steps : int
        Optimisation steps of one :meth:`Trainer.run` call.
    batch_size : int
        Patches per step.
    patch_size : int or None
        Network input patch size in pixels (rounded to a valid size); ``None`` picks
        an output patch of about 128 px.
    learning_rate : float
        Peak learning rate.
    optimizer : {"adam", "sgd"}
        Adam (default) or the paper's SGD with momentum 0.99.
    schedule : {"constant", "cosine"}
        Learning-rate schedule over ``steps``.
    w0, sigma : float
        Border-weight amplitude and width of paper eq. 2 (10 and 5 px).
    augment : AugmentConfig
        Elastic deformation, flips, rotations, intensity changes (and, when asked,
        blur and contrast inversion for transmitted light).
    validation_every : int
        Steps between validations (which decide the kept best weights).
    preview_every : int
        Steps between previews on the preview plane (0 disables previews).
    freeze_norm : bool
        Keep BatchNorm statistics fixed while fine-tuning (their scale and shift still
        learn). Off by default: in benchmarks/bench_builtin.py freezing them did not help.
    seed : int
        Seeds patch sampling, augmentation and (for new networks) initialisation.
    device : str
        "auto", "cpu", "cuda" or "mps".
    amp : bool or None
        Mixed precision (float16 autocast with a gradient scaler); ``None`` means on
        CUDA only. Never used on other devices, where our torch range may not support it.
    pixel_size : PixelSize or None
        Pixel size of the training images, recorded in the trained model; also accepts
        what :func:`~napari_unet.core.calibration.parse_pixel_size` reads (``"4 nm"``,
        ``0.325`` for µm, ``(y, x)``). ``None``: unknown (a base model's is kept).
    holdout : str, float or int
        Annotations held out of training and scored at every validation, which then
        decides the kept best weights (:mod:`~napari_unet.core.holdout`): ``"auto"``
        (one plane of several, else 20 % of the cells), ``"off"``, a fraction of the
        cells (``"20%"``, 0.2) or a number of planes (``"1 plane"``, 1). Stored as the
        canonical text. Ignored when explicit validation data is given.
    tune_postprocess : bool
        When a run ends (completed, or stopped with :meth:`Trainer.request_stop`),
        re-tune the post-processing for the best weights on the training annotations
        (:func:`~napari_unet.core.tuning.tune_postprocess`); the model recommends it.
    """

    steps: int = 200
    batch_size: int = 4
    patch_size: int | None = None
    learning_rate: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: float = 0.0
    w0: float = 10.0
    sigma: float = 5.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    validation_every: int = 25
    validation_patches: int = 8
    preview_every: int = 0
    freeze_norm: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    pixel_size: PixelSize | None = None
    holdout: str | float | int = "auto"
    tune_postprocess: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "holdout", parse_holdout(self.holdout).text)
        if self.pixel_size is not None and not isinstance(self.pixel_size, PixelSize):
            # frozen: the parsed value is set through object.__setattr__
            object.__setattr__(self, "pixel_size", parse_pixel_size(self.pixel_size))
        if self.steps < 1 or self.batch_size < 1:
            raise InputError("steps and batch size must be at least 1")
        if not 0 < self.learning_rate <= FLOAT32_MAX:  # NaN fails too
            raise InputError(
                f"learning rate must be positive and at most {FLOAT32_MAX:.3g}, got "
                f"{self.learning_rate}"
            )
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise InputError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")


#: Settings a run keeps when resumed with other values (:meth:`Trainer.update_config`),
#: and why; the architecture and the base model are not settings of a run at all.
FIXED_MID_RUN = {
    "optimizer": "the run's optimiser state (its momentum) belongs to it; start a new run "
    "to switch",
    "seed": "the run's random streams continue; start a new run to reseed",
}

#: Settings that change the prepared data (weight maps, padding, validation patches).
DATA_SETTINGS = frozenset({"w0", "sigma", "patch_size", "validation_patches", "holdout"})

#: How settings are named in messages (others: the field name with spaces).
_SETTING_NAMES = {"w0": "border weight w0", "sigma": "border sigma", "augment": "augmentation"}


def _setting_value(name: str, value: Any) -> str:
    """A setting's value as a message shows it."""
    if name == "augment":
        return "on" if value.enabled else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


@dataclass(frozen=True)
class ConfigUpdate:
    """What :meth:`Trainer.update_config` changed in a run, and what the run kept.

    Parameters
    ----------
    changed : dict of str to (old, new)
        :class:`TrainConfig` fields now in effect with a new value.
    kept : dict of str to str
        Fields given another value that the run keeps (see :data:`FIXED_MID_RUN`),
        with the reason.
    """

    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: "learning rate 0.001 -> 0.0001, batch size 4 -> 2; kept optimizer
        adam: ..."; "" when nothing was asked to change."""
        parts = []
        if self.changed:
            parts.append(
                ", ".join(
                    f"{_SETTING_NAMES.get(name, name.replace('_', ' '))} "
                    + (
                        f"{_setting_value(name, old)} -> {_setting_value(name, new)}"
                        if name != "augment" or old.enabled != new.enabled
                        else "changed"
                    )
                    for name, (old, new) in self.changed.items()
                )
            )
        parts.extend(f"kept {name.replace('_', ' ')}: {why}" for name, why in self.kept.items())
        return "; ".join(parts)


def config_update(old: TrainConfig, new: TrainConfig) -> tuple[TrainConfig, ConfigUpdate]:
    """The settings a run takes when resumed with ``new``, and what changed.

    The settings of :data:`FIXED_MID_RUN` keep their ``old`` values.

    Returns
    -------
    TrainConfig
        ``new`` with the kept settings.
    ConfigUpdate
        What changed (old and new values) and what was kept, and why.
    """
    kept = {
        name: why for name, why in FIXED_MID_RUN.items() if getattr(new, name) != getattr(old, name)
    }
    config = replace(new, **{name: getattr(old, name) for name in kept})
    changed = {
        f.name: (getattr(old, f.name), getattr(config, f.name))
        for f in fields(TrainConfig)
        if getattr(old, f.name) != getattr(config, f.name)
    }
    return config, ConfigUpdate(changed, kept)


def changes_data(update: ConfigUpdate) -> bool:
    """Whether ``update`` changes the prepared data (weight maps, padding, validation
    patches or the held-out part), which must then be prepared again."""
    return bool(update.changed.keys() & DATA_SETTINGS)


def jsonable_config(config: TrainConfig) -> dict[str, Any]:
    """``config`` as JSON values (as a model's provenance records it)."""
    values = {k: getattr(config, k) for k in config.__dataclass_fields__ if k != "augment"}
    if config.pixel_size is not None:  # JSON: the model's "scale" holds it in full
        values["pixel_size"] = str(config.pixel_size)
    values["augment"] = {k: getattr(config.augment, k) for k in config.augment.__dataclass_fields__}
    return values
