"""benchmarks/device_prebuilt.py: the GPU machine's compiled code kept from one lease to the next. The archive
must round-trip, be refused on another machine's stamp (nothing unpacked), never be saved again from a machine
that used one, and never exceed what one file back from the machine may hold."""
import os
import tarfile

from benchmarks import device_prebuilt as dp


def _layout(tmp_path, library=b"\x7fELF fake gsplat library"):
    build, site, cache = tmp_path / "build", tmp_path / "site" / "gsplat", tmp_path / "cache"
    for d in (build, site, cache):
        d.mkdir(parents=True)
    (build / dp.LIBRARY).write_bytes(library)
    (cache / "step_ops_0123456789ab_sm90.so").write_bytes(b"step kernels")
    (cache / "feature_bwd_ba9876543210_sm90.so").write_bytes(b"tile kernel")
    return build, site, cache


def test_saved_archive_is_used_only_on_a_machine_with_the_same_stamp(tmp_path):
    build, site, cache = _layout(tmp_path)
    archive = str(tmp_path / "prebuilt.tar.xz")
    stamp = "2.11.0+cu130 cuda13.0 gsplat1.5.3 sm90"
    assert dp.save(archive, str(site), stamp=stamp, build_dir=str(build), cache=str(cache))
    with tarfile.open(archive, "r:xz") as tar:
        assert sorted(tar.getnames()) == ["gsplat_cuda.so", "stamp", "unic_lift/feature_bwd_ba9876543210_sm90.so",
                                          "unic_lift/step_ops_0123456789ab_sm90.so"]
    # another torch: nothing is unpacked, gsplat compiles as before
    other = tmp_path / "other_cache"
    assert not dp.use(archive, str(site), stamp="2.12.0+cu130 cuda13.0 gsplat1.5.3 sm90", cache=str(other))
    assert sorted(os.listdir(site)) == [] and not other.exists()
    # the same machine: the library, the shim as gsplat/csrc.py, the project's libraries in its cache
    fresh = tmp_path / "fresh_cache"
    assert dp.use(archive, str(site), stamp=stamp, cache=str(fresh))
    assert (site / dp.LIBRARY).read_bytes() == (build / dp.LIBRARY).read_bytes()
    assert (site / "csrc.py").read_text() == open(dp.SHIM).read()
    assert sorted(os.listdir(fresh)) == sorted(os.listdir(cache))
    assert (fresh / "step_ops_0123456789ab_sm90.so").read_bytes() == b"step kernels"
    # a machine that used the archive does not save it again (its build folder holds no build of its own)
    assert not dp.save(str(tmp_path / "again.tar.xz"), str(site), stamp=stamp, build_dir=str(build), cache=str(cache))
    assert not (tmp_path / "again.tar.xz").exists()


def test_missing_damaged_or_oversized_archives_leave_the_build_as_it_was(tmp_path, monkeypatch, capsys):
    build, site, cache = _layout(tmp_path, library=os.urandom(200_000))  # incompressible
    assert not dp.use(str(tmp_path / "none.tar.xz"), str(site), stamp="s", cache=str(cache))
    (tmp_path / "bad.tar.xz").write_bytes(b"not an archive")
    assert dp.main(["use", str(tmp_path / "bad.tar.xz"), str(site)]) == 0  # one line, never a failed lease
    assert "ReadError" in capsys.readouterr().out and os.listdir(site) == []
    monkeypatch.setattr(dp, "MAX_BYTES", 100_000)
    archive = tmp_path / "big.tar.xz"
    assert not dp.save(str(archive), str(site), stamp="s", build_dir=str(build), cache=str(cache))
    assert not archive.exists() and not os.path.exists(str(archive) + ".tmp")
    assert "more than one file back" in capsys.readouterr().out
