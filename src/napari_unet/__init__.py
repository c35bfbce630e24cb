"""napari-unet: U-Net segmentation of microscopy images inside napari."""

__version__ = "0.1.0"
