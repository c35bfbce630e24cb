"""napari dock widgets: thin layers between napari and :mod:`napari_unet.core`."""
