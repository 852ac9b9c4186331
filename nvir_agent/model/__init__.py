"""The NViR model runtime: network, preprocessing, model files, paper checkpoint
import, scoring and the fast CPU path.

Submodules are imported on use; importing this package pulls in neither torch
nor OpenCV.
"""
