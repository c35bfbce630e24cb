"""The Fine-tune dock's settings: the training fields, and every option as one dataclass.

:class:`TrainingFields` holds the fields of a run (steps, learning rate, the advanced
settings, the model's name); :class:`FinetuneOptions` is what
:meth:`~napari_unet._widgets.finetune.FinetuneWidget.options` returns and
:meth:`~napari_unet._widgets.finetune.FinetuneWidget.set_options` takes: every value a
user can set in the dock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, SpinBox

from napari_unet._widgets import _common
from napari_unet.core.annotations import RESULT_BOUNDARY_BAND
from napari_unet.core.augment import AugmentConfig
from napari_unet.core.calibration import PixelSize
from napari_unet.core.finetune_plan import validation_interval
from napari_unet.core.holdout import parse_holdout
from napari_unet.core.train import TrainConfig

HOLDOUT_TIP = (
    "annotations kept out of training and scored live (F1 at IoU 0.5; IoU for a mask): "
    "auto (one plane of several, else 20% of the cells), off, a fraction of the cells "
    "such as 20%, or a number of planes such as 1 plane"
)
CONVENTIONS = [
    ("sparse (0 unpainted, 1 bg, 2+ cells)", "sparse"),
    ("dense (0 bg, 1+ cells)", "dense"),
    ("binary (0 bg, 1 fg)", "binary"),
    ("auto", "auto"),
]


@dataclass(frozen=True)
class FinetuneOptions:
    """Every value a user sets in the Fine-tune dock (``set_options(**vars(options))``
    sets them back).

    Layers are the layer objects (``set_options`` also takes their names); ``base`` is
    the chosen base model (a ModelSource; ``set_options`` also takes a label, a model
    name such as "em-membranes" or "scratch", or a model file's Path).
    """

    # the input
    image: Any = None
    channel_axis: int | None = None
    channels: Any = None
    channel_layers: tuple[Any, ...] = ()
    rgb: str | None = None
    # "Correct a result"
    result: Any = None
    result_planes: str = "view"
    boundary_band: int = RESULT_BOUNDARY_BAND
    # the annotations and the base model
    annotations: Any = None
    convention: str = "sparse"
    base: Any = None
    # the run (see TrainConfig)
    steps: int = 200
    learning_rate: float = 1e-3
    w0: float = 10.0
    sigma: float = 5.0
    augment: bool = True
    blur: float = 0.0
    invert_contrast: float = 0.0
    batch_size: int = 4
    #: None: about 128 px of output.
    patch_size: int | None = None
    #: Steps between previews of the plane in view (0: never).
    preview_every: int = 10
    device: str = "auto"
    #: "auto", "off", "20%", "1 plane" (:func:`~napari_unet.core.holdout.parse_holdout`).
    holdout: str = "auto"
    #: The trained model's name.
    name: str = "fine-tuned"


class TrainingFields:
    """The fields of a training run, the advanced ones in a container shown on demand."""

    def __init__(self) -> None:
        self.convention = ComboBox(label="convention", choices=CONVENTIONS, value="sparse")
        self.steps = SpinBox(label="steps", value=200, min=1, max=100_000, step=50)
        self.learning_rate = FloatSpinBox(
            label="learning rate", value=1e-3, min=1e-6, max=1.0, step=1e-4
        )
        self.learning_rate.native.setDecimals(5)
        self.advanced_toggle = CheckBox(text="advanced settings", value=False)
        self.w0 = FloatSpinBox(
            label="border weight w0", value=10.0, min=0.0, max=100.0, step=1.0,
            tooltip="extra loss weight between touching cells (paper eq. 2)",
        )  # fmt: skip
        self.sigma = FloatSpinBox(
            label="border sigma (px)", value=5.0, min=0.5, max=50.0, step=0.5,
            tooltip="width of the border weight (paper eq. 2)",
        )  # fmt: skip
        self.augment = CheckBox(text="augmentation (elastic, flips, intensity)", value=True)
        self.blur = FloatSpinBox(
            label="blur (px)", value=0.0, min=0.0, max=20.0, step=0.5,
            tooltip="transmitted light: blur each training patch by a Gaussian of up to this "
            "sigma (slightly defocused frames; the DIC recipe uses 1.5; 0: off)",
        )  # fmt: skip
        self.invert = FloatSpinBox(
            label="invert contrast", value=0.0, min=0.0, max=1.0, step=0.1,
            tooltip="transmitted light: probability of inverting a patch's contrast about its "
            "mean (the opposite DIC shear or phase halo; the DIC recipe uses 0.5; 0: off)",
        )  # fmt: skip
        self.batch_size = SpinBox(label="batch size", value=4, min=1, max=64)
        self.patch_size = SpinBox(
            label="patch size (px)", value=0, min=0, max=1024, step=16,
            tooltip="network input patch size; 0 picks about 128 px of output",
        )  # fmt: skip
        self.preview_every = SpinBox(
            label="preview every", value=10, min=0, max=10_000,
            tooltip="steps between previews of the plane in view (0: never)",
        )  # fmt: skip
        self.device = ComboBox(label="device", choices=_common.device_choices(), value="auto")
        self.holdout = LineEdit(label="hold out", value="auto", tooltip=HOLDOUT_TIP)
        self.advanced = Container(
            widgets=[self.w0, self.sigma, self.augment, self.blur, self.invert,
                     self.batch_size, self.patch_size, self.preview_every, self.device,
                     self.holdout],
            labels=True,
            visible=False,
        )  # fmt: skip
        self.name = LineEdit(label="model name", value="fine-tuned")
        self.advanced_toggle.changed.connect(self._toggle_advanced)
        #: Option keys (of FinetuneOptions) and their fields.
        self.by_key = {
            "convention": self.convention, "steps": self.steps,
            "learning_rate": self.learning_rate, "w0": self.w0, "sigma": self.sigma,
            "augment": self.augment, "blur": self.blur, "invert_contrast": self.invert,
            "batch_size": self.batch_size, "patch_size": self.patch_size,
            "preview_every": self.preview_every, "device": self.device,
            "holdout": self.holdout, "name": self.name,
        }  # fmt: skip

    def _toggle_advanced(self, shown: bool) -> None:
        self.advanced.visible = shown

    @property
    def widgets(self) -> list[Any]:
        """The fields in the dock's order (the convention is placed by the dock)."""
        return [self.steps, self.learning_rate, self.advanced_toggle, self.advanced, self.name]

    def values(self) -> dict[str, Any]:
        """The fields' values by option key (``patch_size`` None: automatic)."""
        values = {key: field.value for key, field in self.by_key.items()}
        values["patch_size"] = values["patch_size"] or None
        return values

    def set(self, key: str, value: Any) -> None:
        """Set the field of option ``key`` as a user would (``patch_size`` None: automatic;
        ``holdout`` is checked at once).

        Raises
        ------
        InputError
            For a hold-out setting that cannot be read.
        """
        if key == "patch_size":
            value = value or 0
        elif key == "holdout":
            value = parse_holdout(value).text
        self.by_key[key].value = value

    def config(self, pixel_size: PixelSize | None) -> TrainConfig:
        """The :class:`TrainConfig` of the fields, recording ``pixel_size``."""
        steps = int(self.steps.value)
        return TrainConfig(
            steps=steps,
            batch_size=int(self.batch_size.value),
            patch_size=int(self.patch_size.value) or None,
            learning_rate=float(self.learning_rate.value),
            w0=float(self.w0.value),
            sigma=float(self.sigma.value),
            augment=AugmentConfig(
                enabled=bool(self.augment.value),
                blur=float(self.blur.value),
                invert=float(self.invert.value),
            ),
            validation_every=validation_interval(steps),
            preview_every=int(self.preview_every.value),
            device=self.device.value,
            pixel_size=pixel_size,
            holdout=self.holdout.value,
        )


__all__ = ["FinetuneOptions", "TrainingFields"]
