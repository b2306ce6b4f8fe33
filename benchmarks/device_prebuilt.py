"""The GPU machine's compiled code, kept from one lease to the next (``benchmarks/device_env.sh``).

Every lease starts on a bare machine, where gsplat compiles its CUDA extension (about 70 s of device time) and
the project's nvcc libraries are built (the tile kernel, the step kernels). After such a build, ``save`` packs
gsplat's ``gsplat_cuda.so``, the project's libraries and a stamp (torch, CUDA, gsplat, GPU architecture) into
one xz archive in $OUT, small enough to come back from the machine (at most 16 MiB a file). Carried back as
``.prebuilt/prebuilt.tar.xz``, ``use`` unpacks it on the next machine when the stamp matches: gsplat then imports
the library through ``gsplat/csrc.py`` (``benchmarks/gsplat_csrc_shim.py``) instead of compiling it, and the
project finds its libraries in its cache folder. Where the stamp differs, nothing is unpacked and everything is
built as before.

    python benchmarks/device_prebuilt.py use .prebuilt/prebuilt.tar.xz /tmp/site/gsplat
    python benchmarks/device_prebuilt.py save $OUT/prebuilt.tar.xz /tmp/site/gsplat
"""
from __future__ import annotations

import argparse
import glob
import io
import os
import shutil
import subprocess
import sys
import tarfile
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHIM = os.path.join(HERE, "gsplat_csrc_shim.py")
LIBRARY = "gsplat_cuda.so"
MAX_BYTES = 16 * 1024 * 1024 - 64 * 1024  # what one file back from the device machine may hold, with a margin


def machine_stamp() -> str:
    """torch, CUDA, gsplat and GPU architecture of this machine, e.g. ``2.11.0+cu130 cuda13.0 gsplat1.5.3 sm90``."""
    import torch
    from gsplat.version import __version__ as gsplat_version

    major, minor = torch.cuda.get_device_capability()
    return f"{torch.__version__} cuda{torch.version.cuda} gsplat{gsplat_version} sm{major}{minor}"


def project_cache() -> str:
    sys.path.insert(0, REPO)
    from gaussian_renderer.feature_backward import _cache_dir

    return _cache_dir()


def use(archive: str, gsplat_dir: str, stamp: Optional[str] = None, cache: Optional[str] = None) -> bool:
    """Unpacks ``archive`` when its stamp matches this machine's: the library and the shim into ``gsplat_dir``,
    the project's libraries into ``cache``. Returns whether it did; one line says why not."""
    if not os.path.isfile(archive):
        print(f"prebuilt: no {archive}; building here")
        return False
    with tarfile.open(archive, "r:xz") as tar:  # a damaged archive fails here, before CUDA is asked
        names = tar.getnames()
        saved = tar.extractfile("stamp").read().decode().strip() if "stamp" in names else "(none)"
        stamp = stamp if stamp is not None else machine_stamp()
        if saved != stamp or LIBRARY not in names:
            print(f"prebuilt: {archive} was built for {saved}, this machine is {stamp}; building here")
            return False
        with tar.extractfile(LIBRARY) as src, open(os.path.join(gsplat_dir, LIBRARY), "wb") as dst:
            shutil.copyfileobj(src, dst)
        cache = cache if cache is not None else project_cache()
        os.makedirs(cache, exist_ok=True)
        for name in names:
            if name.startswith("unic_lift/") and name.endswith(".so"):
                with tar.extractfile(name) as src, open(os.path.join(cache, os.path.basename(name)), "wb") as dst:
                    shutil.copyfileobj(src, dst)
    shutil.copyfile(SHIM, os.path.join(gsplat_dir, "csrc.py"))
    print(f"prebuilt: gsplat's extension and the project's libraries from {archive} ({stamp})")
    return True


def save(archive: str, gsplat_dir: str, stamp: Optional[str] = None, build_dir: Optional[str] = None,
         cache: Optional[str] = None) -> bool:
    """After a build on this machine (not when ``use`` unpacked one): packs gsplat's library, the project's
    libraries and the stamp into ``archive`` if it stays under MAX_BYTES. Returns whether it wrote it."""
    if os.path.isfile(os.path.join(gsplat_dir, "csrc.py")):
        print("prebuilt: used, not saved again")
        return False
    if build_dir is None:
        from torch.utils.cpp_extension import _get_build_directory

        build_dir = _get_build_directory("gsplat_cuda", False)
    library = os.path.join(build_dir, LIBRARY)
    if not os.path.isfile(library):
        print(f"prebuilt: no {library} to save")
        return False
    stamp = stamp if stamp is not None else machine_stamp()
    cache = cache if cache is not None else project_cache()
    tmp = archive + ".tmp"
    if shutil.which("strip"):  # the static symbol table is not needed to load it (PyInit_ is dynamic)
        stripped = tmp + ".so"
        shutil.copyfile(library, stripped)
        if subprocess.run(["strip", "--strip-unneeded", stripped], capture_output=True).returncode == 0:
            library = stripped
    with tarfile.open(tmp, "w:xz") as tar:
        data = (stamp + "\n").encode()
        info = tarfile.TarInfo("stamp")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        tar.add(library, arcname=LIBRARY)
        for so in sorted(glob.glob(os.path.join(cache, "*.so"))):
            tar.add(so, arcname="unic_lift/" + os.path.basename(so))
    if library.endswith(".tmp.so"):
        os.remove(library)
    size = os.path.getsize(tmp)
    if size > MAX_BYTES:
        os.remove(tmp)
        print(f"prebuilt: {size / 2**20:.1f} MiB, more than one file back from the machine may hold; not saved")
        return False
    os.replace(tmp, archive)
    print(f"prebuilt: saved {archive} ({size / 2**20:.1f} MiB, {stamp})")
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("verb", choices=("use", "save"))
    p.add_argument("archive")
    p.add_argument("gsplat_dir", help="the installed gsplat package folder, e.g. /tmp/site/gsplat")
    a = p.parse_args(argv)
    try:
        (use if a.verb == "use" else save)(a.archive, a.gsplat_dir)
    except Exception as e:  # a damaged archive, a full disk: never fail the lease, build as before
        print(f"prebuilt: {a.verb} {a.archive} failed ({type(e).__name__}: {e}); building here as before")
    return 0


if __name__ == "__main__":
    sys.exit(main())
