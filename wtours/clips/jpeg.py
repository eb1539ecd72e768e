"""JPEG decoding for the CPU multi-crop: whole frames, or only the window a clip's crops use.

A clip's views are all cut from one window of its frames (`augment.plan_crops`' clip box, 0.2-1 of the
frame's area, 0.4 on average), and decoding whole frames took 45% of a worker's time. TurboJPEG 3's
cropped decompression (tj3SetCroppingRegion) decodes only the rows down to the window's bottom and runs
the inverse DCT, upsampling and colour conversion only on its columns. Its pixels are the whole decode's
when the region starts one iMCU (the JPEG's 8 or 16 px block of chroma samples) left of and above the
window and ends one iMCU right of it, since chroma upsampling near an edge reads samples beyond it (the
tests compare every pixel, and `_self_check` once per thread): 2.5-2.9x less decoding per clip on the
loader benchmark's frames (docs/benchmarks.md).

The library: $WTOURS_TURBOJPEG (a path to libturbojpeg.so.0 >= 3.0, or `off`), else the system's
libturbojpeg when it is version 3 (Fedora 40+, Arch, Homebrew, conda-forge), else the copy that the
`turbojpeg` 0.0.2 wheel bundles (`wtours[fast-jpeg]`: Linux x86_64, CPython 3.8-3.13). That copy is found
through the distribution's own file list, never through the module name `turbojpeg`, which PyTurboJPEG's
module has too. Without one, OpenCV decodes whole frames, with the same pixels: only the speed differs,
and the process says so once."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import logging
import os
import threading

import cv2
import numpy as np
import torch

log = logging.getLogger(__name__)

if not hasattr(cv2, "IMREAD_COLOR_RGB"):  # an ImportError: the pipeline turns it into an error with a hint
    raise ImportError(f"OpenCV {cv2.__version__} cannot decode to RGB: the CPU augmentation needs OpenCV >= 4.10")
_DECODE_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION

LIBRARY_ENV = "WTOURS_TURBOJPEG"
LIBRARY_OFF = ("off", "0", "none")
# The wheel that bundles a TurboJPEG 3 library (auditwheel's `turbojpeg.libs` folder), by distribution name:
# PyTurboJPEG's distribution is `PyTurboJPEG`, so its module of the same name is never taken for this one.
WHEEL = "turbojpeg"
WHEEL_LIBRARIES = "turbojpeg.libs"
NO_LIBRARY_NOTE = ("JPEG frames are decoded whole (the same pixels, more slowly): no TurboJPEG 3 library for "
                   "decoding only the clip window; pip install 'wtours[fast-jpeg]' (Linux x86_64, Python 3.10-3.13), "
                   f"or set {LIBRARY_ENV} to a libturbojpeg.so.0 >= 3.0 ({LIBRARY_ENV}=off silences this)")


def not_decodable(i: int, count: int, jpg: bytes) -> RuntimeError:
    return RuntimeError(f"frame {i} of {count} is not a decodable JPEG ({len(jpg)} bytes)")


def decode_frame(jpg: bytes) -> np.ndarray | None:
    """A whole JPEG -> (H, W, 3) uint8 RGB, or None where it does not decode.

    libjpeg-turbo through OpenCV: the same pixels as PIL's decoder (the authors') and torchvision's
    (the same library, islow IDCT, fancy upsampling). EXIF orientation is not applied, as PIL's
    Image.open and torchvision's decode_jpeg do not apply it by default."""
    try:
        return cv2.imdecode(np.frombuffer(jpg, np.uint8), _DECODE_FLAGS)  # None where it fails
    except cv2.error:  # an empty buffer fails OpenCV's argument check
        return None


def decode_clip(jpgs: list[bytes]) -> list[torch.Tensor]:
    """T JPEGs -> T x (3, H, W) uint8. Raises RuntimeError for a frame that does not decode.

    Each frame is a channels-last view of the decoder's (H, W, 3) rows: crops of it are row copies,
    where stacking the frames would transpose them whole."""
    frames = []
    for i, jpg in enumerate(jpgs):
        rgb = decode_frame(jpg)
        if rgb is None:
            raise not_decodable(i, len(jpgs), jpg)
        frames.append(torch.from_numpy(rgb).permute(2, 0, 1))
    return frames


# ------------------------------------------------------------------ TurboJPEG 3: the window only


class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


_TJINIT_DECOMPRESS = 1
_TJPARAM_SUBSAMP, _TJPARAM_JPEGWIDTH, _TJPARAM_JPEGHEIGHT = 4, 5, 6
_TJPF_RGB = 0
_TJERR_WARNING = 0
# The iMCU (width, height) of each chroma subsampling, by TJSAMP value: 444, 422, 420, GRAY, 440, 411, 441.
_IMCU = {0: (8, 8), 1: (16, 8), 2: (16, 16), 3: (8, 8), 4: (8, 16), 5: (32, 8), 6: (8, 32)}


class WindowDecoder:
    """Decodes the part of a JPEG that a box needs, pixel for pixel as the whole decode (module doc)."""

    def __init__(self, path: str):
        lib = ctypes.CDLL(path)
        lib.tj3Init.restype = ctypes.c_void_p
        lib.tj3Init.argtypes = [ctypes.c_int]
        lib.tj3Destroy.argtypes = [ctypes.c_void_p]
        lib.tj3DecompressHeader.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.tj3Get.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.tj3GetErrorCode.argtypes = [ctypes.c_void_p]
        lib.tj3SetCroppingRegion.argtypes = [ctypes.c_void_p, _Region]
        lib.tj3Decompress8.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p,
                                       ctypes.c_int, ctypes.c_int]
        self.path, self.lib = path, lib
        self.handle = lib.tj3Init(_TJINIT_DECOMPRESS)
        if not self.handle:
            raise OSError(f"{path}: tj3Init failed")

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            self.lib.tj3Destroy(self.handle)

    def _failed(self) -> bool:
        """False, with a fresh handle: a fatal error leaves the handle's decoder in a state that refuses
        every later JPEG (one undecodable frame stopped a whole worker)."""
        self.lib.tj3Destroy(self.handle)
        self.handle = self.lib.tj3Init(_TJINIT_DECOMPRESS)
        if not self.handle:
            raise OSError(f"{self.path}: tj3Init failed")
        return False

    def size(self, jpg: bytes) -> tuple[int, int] | None:
        """(height, width) from the JPEG's header, or None where it has none."""
        if self.lib.tj3DecompressHeader(self.handle, jpg, len(jpg)) != 0:
            self._failed()
            return None
        return self.lib.tj3Get(self.handle, _TJPARAM_JPEGHEIGHT), self.lib.tj3Get(self.handle, _TJPARAM_JPEGWIDTH)

    def decode_window(self, jpg: bytes, box: tuple[int, int, int, int], out: np.ndarray) -> bool:
        """out (y1 - y0, x1 - x0, 3) <- the box (x0, y0, x1, y1) of the decoded JPEG; False where it does
        not decode. A warning (corrupt data in the rows decoded) does not count, as OpenCV decodes those
        frames: damage is the structural check's verdict (`jpeg_check`), the same for every decoder."""
        x0, y0, x1, y1 = box
        lib, handle = self.lib, self.handle
        if lib.tj3DecompressHeader(handle, jpg, len(jpg)) != 0:
            return self._failed()
        width, height = lib.tj3Get(handle, _TJPARAM_JPEGWIDTH), lib.tj3Get(handle, _TJPARAM_JPEGHEIGHT)
        imcu = _IMCU.get(lib.tj3Get(handle, _TJPARAM_SUBSAMP))
        if imcu is None or not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            return False
        mw, mh = imcu
        left = max(0, x0 - x0 % mw - mw)  # one iMCU of margin, on an iMCU boundary as the library requires
        top = max(0, y0 - mh)
        right = min(width, x1 + mw)
        region = np.empty((y1 - top, right - left, 3), np.uint8)  # (h', w', 3)
        if lib.tj3SetCroppingRegion(handle, _Region(left, top, right - left, y1 - top)) != 0:
            return False
        if (lib.tj3Decompress8(handle, jpg, len(jpg), region.ctypes.data, region.strides[0], _TJPF_RGB) != 0
                and lib.tj3GetErrorCode(handle) != _TJERR_WARNING):
            return self._failed()
        np.copyto(out, region[y0 - top:, x0 - left:x1 - left])
        return True


def _library_paths() -> list[str]:
    chosen = os.environ.get(LIBRARY_ENV)
    if chosen:
        return [] if chosen.lower() in LIBRARY_OFF else [chosen]
    paths = [system] if (system := ctypes.util.find_library("turbojpeg")) else []
    return paths + wheel_library_paths()


def wheel_library_paths() -> list[str]:
    """The libturbojpeg files the `turbojpeg` wheel installed, from its distribution's RECORD: nothing is
    imported, and no module lookup is involved (another package's `turbojpeg` module cannot win it)."""
    try:
        files = importlib.metadata.distribution(WHEEL).files or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return sorted(str(file.locate()) for file in files
                  if file.parts[:1] == (WHEEL_LIBRARIES,) and file.name.startswith("libturbojpeg"))


def _self_check(decoder: WindowDecoder) -> bool:
    """The window of a 4:2:0 and a 4:4:4 JPEG against their whole decode: a library that differs is not used."""
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (96, 136, 3), dtype=np.uint8), (5, 5), 2)
    box = (21, 19, 117, 83)
    window = np.empty((box[3] - box[1], box[2] - box[0], 3), np.uint8)
    for sampling in (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444):
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90,
                                                   cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling])
        jpg = encoded.tobytes()
        whole = decode_frame(jpg)
        if (whole is None or not decoder.decode_window(jpg, box, window)
                or not np.array_equal(window, whole[box[1]:box[3], box[0]:box[2]])):
            return False
    return True


class _PerThread(threading.local):
    pid: int = -1  # the process that made `decoder` (a fork's child makes its own)
    decoder: WindowDecoder | None = None


_decoders = _PerThread()
_noted = False  # the note on whole-frame decoding was given (a forked worker inherits it)


def window_decoder() -> WindowDecoder | None:
    """This thread's TurboJPEG 3 decoder, or None (frames are then decoded whole). One per thread of each
    process: two threads sharing a tj3 handle crashed the interpreter, a lock would decode one frame at a
    time, and a handle costs about 1 ms (the self-check included); a DataLoader worker makes its own after
    the fork, and a thread's handle is freed with the thread. Without a library the process says so once
    (`make_loader` asks first, so that forked workers do not repeat it)."""
    global _noted
    if _decoders.pid != os.getpid():
        _decoders.pid, _decoders.decoder = os.getpid(), None
        for path in _library_paths():
            try:
                decoder = WindowDecoder(path)
            except (OSError, AttributeError) as e:  # not loadable, or TurboJPEG 2 (no tj3 functions)
                log.debug("%s: not a TurboJPEG 3 library (%s)", path, e)
                continue
            if _self_check(decoder):
                _decoders.decoder = decoder
                break
            log.warning("%s decodes JPEG windows unlike the whole decode; decoding whole frames instead", path)
        chosen = os.environ.get(LIBRARY_ENV, "")
        if _decoders.decoder is None and not _noted and chosen.lower() not in LIBRARY_OFF:
            _noted = True
            if chosen:
                log.warning("%s=%s is not a usable TurboJPEG 3 library: JPEG frames are decoded whole (the same "
                            "pixels, more slowly); point it at a libturbojpeg.so.0 >= 3.0, or set it to off",
                            LIBRARY_ENV, chosen)
            else:
                log.warning(NO_LIBRARY_NOTE)
    return _decoders.decoder
