"""Camera poses with pycolmap (no COLMAP binary): SIFT features, sequential or exhaustive
matching, incremental mapping, undistortion to PINHOLE, written as SCENE/images + SCENE/sparse/0.

pycolmap runs in a child process (``python -m tools.capture.sfm CONFIG``): a failed C++ check can
abort the process in some versions, and COLMAP's log goes to OUT/colmap/log.txt, not the
terminal. The child reports progress lines on stdout ("P stage done total") and one result line
("R {json}"); the parent draws the bars and turns every failure into one line.

Convention: the model written is COLMAP's (world-to-camera qvec (w, x, y, z), tvec; pixel centres
at +0.5), what scene/readers/colmap.py reads.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import List

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIN_IMAGES = 3  # fewer cannot be reconstructed (nor trained)
TRY = ("take more photos with more overlap (every spot in 3 or more photos, each photo sharing about "
       "two thirds with the next) and texture in view")
TRY_VIDEO = "extract more frames (--fps 4) or film more slowly"


@dataclass
class SfmConfig:
    image_dir: str
    names: List[str]
    work_dir: str  # OUT/colmap: database, distorted model, log
    out_dir: str  # OUT: images/ and sparse/0 are written here
    matcher: str = "exhaustive"  # exhaustive | sequential
    camera_model: str = "SIMPLE_RADIAL"
    single_camera: bool = True
    max_features: int = 8192
    max_image_size: int = 1600  # features and undistorted images (longest side, px)
    threads: int = -1
    seed: int = 0
    overlap: int = 10  # sequential matching: neighbours per image


@dataclass
class SfmResult:
    registered: List[str]
    missing: List[str]
    models: List[int] = field(default_factory=list)  # registered images per model, largest first
    points: int = 0
    camera: str = ""
    seconds: dict = field(default_factory=dict)


def _fail_hint(cfg: SfmConfig, video: bool) -> str:
    return TRY_VIDEO if video else TRY


def run_sfm(cfg: SfmConfig, video: bool = False, progress: bool = True) -> SfmResult:
    """Runs the pycolmap child and returns what it registered; CaptureError on any failure."""
    from tqdm import tqdm
    from .common import CaptureError

    if len(cfg.names) < MIN_IMAGES:
        raise CaptureError(f"{cfg.image_dir}: {len(cfg.names)} image(s); pose recovery needs at least "
                           f"{MIN_IMAGES} (better 20+): {_fail_hint(cfg, video)}")
    os.makedirs(cfg.work_dir, exist_ok=True)
    cfg_path = os.path.join(cfg.work_dir, "sfm_config.json")
    with open(cfg_path, "w") as f:
        json.dump(asdict(cfg), f)
    log_path = os.path.join(cfg.work_dir, "log.txt")
    db_path = os.path.join(cfg.work_dir, "database.db")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result, stage, bars, lock, stop = None, "start", {}, threading.Lock(), threading.Event()
    ticker = threading.Thread(target=_count_pairs, args=(db_path, bars, lock, stop), daemon=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tools.capture.sfm", cfg_path], stdout=subprocess.PIPE,
                                stderr=log, env=env, text=True, bufsize=1)
        ticker.start()
        try:
            for line in proc.stdout:
                if line.startswith("P "):
                    _, stage, done, total = line.split()
                    with lock:
                        if stage not in bars:
                            for b in bars.values():
                                b.close()
                            unit = {"matching": "pair", "undistort": "step"}.get(stage, "img")
                            bars.clear()
                            bars[stage] = tqdm(total=int(total) or None, desc=stage, unit=unit,
                                               disable=not progress)
                        bar = bars[stage]
                        done = int(done)
                        if done < 0:  # the child finished the stage; an unknown total is read off the database
                            done = int(total) or _matched_pairs(db_path)
                        bar.update(max(0, done - bar.n))
                elif line.startswith("R "):
                    result = json.loads(line[2:])
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            stop.set()
            ticker.join()
            with lock:
                for b in bars.values():
                    b.close()
    if result is not None and "error" in result:
        raise CaptureError(f"pycolmap failed in {result['stage']}: {result['error']} (log: {log_path})")
    if rc != 0 or result is None:
        raise CaptureError(f"pycolmap stopped in {stage} (exit {rc}; COLMAP's log: {log_path}); "
                           f"{_fail_hint(cfg, video)}")
    res = SfmResult(**result)
    n = len(cfg.names)
    if len(res.registered) < MIN_IMAGES:
        raise CaptureError(f"pose recovery failed: {len(res.registered)} of {n} images could be put into one "
                           f"reconstruction; {_fail_hint(cfg, video)}")
    return res


# ------------------------------------------------------------------------------------- child

_SAY = threading.Lock()


def _say(*parts) -> None:
    """One protocol line to the parent (whole lines: the matching ticker is another thread)."""
    with _SAY:
        sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
        sys.stdout.flush()


_STAGE = ["start"]


def _matched_pairs(db_path: str) -> int:
    """Image pairs matched so far (read-only look at COLMAP's database; 0 when it is busy)."""
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=0.2)
        try:
            return int(con.execute("SELECT count(*) FROM matches").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _count_pairs(db_path: str, bars: dict, lock: threading.Lock, stop: threading.Event) -> None:
    """Parent side: advance the matching bar from COLMAP's database once a second (another process
    than COLMAP's, so the two SQLite copies never share POSIX locks)."""
    while not stop.wait(1.0):
        with lock:
            bar = bars.get("matching")
        if bar is None:
            continue
        k = _matched_pairs(db_path)
        with lock:
            if bars.get("matching") is bar and k > bar.n:
                bar.update((min(k, bar.total) if bar.total else k) - bar.n)


def _child(cfg: SfmConfig) -> dict:
    import pycolmap

    pycolmap.set_random_seed(cfg.seed)
    t = {}
    db_path = os.path.join(cfg.work_dir, "database.db")
    if os.path.exists(db_path):
        os.remove(db_path)
    stage = _STAGE[0] = "features"
    t0 = time.time()
    pycolmap.Database.open(db_path).close()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = cfg.camera_model
    mode = pycolmap.CameraMode.SINGLE if cfg.single_camera else pycolmap.CameraMode.AUTO
    pycolmap.import_images(db_path, cfg.image_dir, camera_mode=mode, image_names=cfg.names, options=reader)
    ext = pycolmap.FeatureExtractionOptions()
    ext.num_threads = cfg.threads
    ext.max_image_size = cfg.max_image_size
    ext.sift.max_num_features = cfg.max_features
    n = len(cfg.names)
    step = max(1, min(16, n // 20))
    _say("P", stage, 0, n)
    for i in range(0, n, step):
        chunk = cfg.names[i:i + step]
        pycolmap.extract_features(db_path, cfg.image_dir, image_names=chunk, camera_mode=mode, reader_options=reader,
                                  extraction_options=ext, device=pycolmap.Device.cpu)
        _say("P", stage, i + len(chunk), n)
    t["features"] = time.time() - t0

    stage = _STAGE[0] = "matching"
    t0 = time.time()
    pairs = n * (n - 1) // 2 if cfg.matcher == "exhaustive" else 0  # 0: total unknown (sequential)
    _say("P", stage, 0, pairs)
    mo = pycolmap.FeatureMatchingOptions()
    mo.num_threads = cfg.threads
    # The parent process counts the matched pairs for the bar while COLMAP writes them (_count_pairs).
    # Never from this process: Python's sqlite3 and COLMAP's own SQLite are two copies of the library in
    # one process, and closing one's connection drops the POSIX locks the other holds on the same file
    # (sqlite.org, "How To Corrupt An SQLite Database File", 2.2.1): COLMAP then died of SIGBUS in the
    # middle of matching (seen once in the test suite, 2026-12-01).
    if cfg.matcher == "sequential":
        po = pycolmap.SequentialPairingOptions()
        po.overlap = cfg.overlap
        po.num_threads = cfg.threads
        pycolmap.match_sequential(db_path, matching_options=mo, pairing_options=po, device=pycolmap.Device.cpu)
    else:
        pycolmap.match_exhaustive(db_path, matching_options=mo, device=pycolmap.Device.cpu)
    _say("P", stage, -1, pairs)  # finished (-1): the parent reads the final count when the total was unknown
    t["matching"] = time.time() - t0

    stage = _STAGE[0] = "mapping"
    t0 = time.time()
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = cfg.threads
    opts.random_seed = cfg.seed
    opts.min_model_size = MIN_IMAGES
    count = [0]

    def on_image():
        count[0] += 1
        _say("P", stage, min(count[0], n), n)

    _say("P", stage, 0, n)
    map_dir = os.path.join(cfg.work_dir, "models")
    shutil.rmtree(map_dir, ignore_errors=True)
    os.makedirs(map_dir)
    models = pycolmap.incremental_mapping(db_path, cfg.image_dir, map_dir, options=opts, next_image_callback=on_image)
    t["mapping"] = time.time() - t0
    ranked = sorted(models.values(), key=lambda r: r.num_reg_images(), reverse=True)
    if not ranked or ranked[0].num_reg_images() < MIN_IMAGES:
        _say("P", stage, n, n)
        return {"registered": [], "missing": list(cfg.names), "models": [r.num_reg_images() for r in ranked],
                "seconds": t}
    best = ranked[0]
    _say("P", stage, best.num_reg_images(), n)
    sparse = os.path.join(cfg.work_dir, "sparse", "0")
    shutil.rmtree(os.path.join(cfg.work_dir, "sparse"), ignore_errors=True)
    os.makedirs(sparse)
    best.write(sparse)  # the distorted model: maps masks made on the original photos (masks.py)

    stage = _STAGE[0] = "undistort"
    t0 = time.time()
    _say("P", stage, 0, 1)
    tmp = os.path.join(cfg.work_dir, "undistorted")
    shutil.rmtree(tmp, ignore_errors=True)
    uo = pycolmap.UndistortCameraOptions()
    uo.max_image_size = cfg.max_image_size
    pycolmap.undistort_images(tmp, sparse, cfg.image_dir, output_type="COLMAP", undistort_options=uo,
                              num_threads=cfg.threads)
    _say("P", stage, 1, 1)
    t["undistort"] = time.time() - t0
    registered = sorted(im.name for im in best.images.values() if im.has_pose)
    cam = next(iter(best.cameras.values()))
    return {"registered": registered, "missing": [x for x in cfg.names if x not in set(registered)],
            "models": [r.num_reg_images() for r in ranked], "points": best.num_points3D(),
            "camera": f"{cam.model.name} {cam.width}x{cam.height} f={cam.params[0]:.1f}", "seconds": t}


def _child_main(cfg_path: str) -> int:
    with open(cfg_path) as f:
        cfg = SfmConfig(**json.load(f))
    try:
        out = _child(cfg)
    except Exception as e:  # pycolmap raises ValueError/RuntimeError for failed checks: report in one line
        msg = " ".join(str(e).split())[:200]
        _say("R", json.dumps({"error": msg or type(e).__name__, "stage": _STAGE[0]}))
        return 1
    _say("R", json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
