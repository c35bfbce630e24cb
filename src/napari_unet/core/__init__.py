"""The pure core of napari-unet: no Qt, napari or magicgui imports anywhere below here.

Usable from scripts and the command line; the napari widgets are a thin layer on top.
"""
