"""Face detection: an MTCNN cascade (P-Net, R-Net, O-Net) written for speed.

Use :class:`FaceDetector`; it loads the weights shipped in the installed
facenet-pytorch package. Importing this package loads no model.
"""

from engines.detection.detector import FaceDetector

__all__ = ["FaceDetector"]
