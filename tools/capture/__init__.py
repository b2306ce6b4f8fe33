"""Your own capture -> a trainable COLMAP scene, with pip packages only.

frames.py  photo folders and videos (imageio-ffmpeg) -> frames, blurred frames dropped
sfm.py     pycolmap: features, matching, incremental mapping, undistortion to PINHOLE
masks.py   per-view instance-id maps: SAM through transformers, or masks made elsewhere
The command line is tools/prepare_capture.py.
"""
