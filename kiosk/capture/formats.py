"""The files the kiosk reads as pictures and as videos: the one list of each.

Suffixes are compared case-insensitively; the content, not the name, decides
how a file is decoded. A GIF is read as a video (animated, through OpenCV's
FFmpeg backend), so a folder source skips it and enrollment samples its frames.
"""

from __future__ import annotations

#: Still images (OpenCV's imdecode, Pillow's formats aside).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".bmp", ".webp", ".tif", ".tiff"})

#: Videos and animations (OpenCV's VideoCapture).
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif"})
