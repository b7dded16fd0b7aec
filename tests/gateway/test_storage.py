"""Job storage: atomic writes, no partial files, traversal rejection, persistence, cleanup."""

from __future__ import annotations

import errno
import os
import time

import pytest

from facecraft.gateway.errors import GatewayError
from facecraft.gateway.storage import JobGone, JobRecord, JobStorage, StorageError, atomic_write_bytes

JOB = "0123456789abcdef0123456789abcdef"


def _record(job_id: str = JOB, status: str = "completed", created_at: float | None = None) -> JobRecord:
    now = time.time() if created_at is None else created_at
    return JobRecord(job_id=job_id, kind="process", status=status, created_at=now, updated_at=now)


def test_write_and_read_back(tmp_path):
    storage = JobStorage(tmp_path)
    storage.ensure_ready()
    assert storage.write_file(JOB, "portrait.png", b"png-bytes") == 9
    assert storage.read_file(JOB, "portrait.png") == b"png-bytes"
    assert storage.existing_file(JOB, "portrait.png").parent == storage.jobs_root / JOB
    assert not [p for p in (storage.jobs_root / JOB).iterdir() if p.name.startswith(".tmp-")]


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "a" / "file.bin"
    atomic_write_bytes(target, b"first version")
    atomic_write_bytes(target, b"2nd")
    assert target.read_bytes() == b"2nd"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_disk_full_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "job" / "portrait.png"
    atomic_write_bytes(target, b"old complete content")
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageError) as info:
        atomic_write_bytes(target, b"new content that does not fit")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (info.value.status_code, info.value.error) == (507, "storage_error")
    assert "no space" in info.value.message
    assert target.read_bytes() == b"old complete content"
    assert sorted(p.name for p in target.parent.iterdir()) == ["portrait.png"]


def test_other_os_errors_are_500_storage_error(tmp_path, monkeypatch):
    def failing_replace(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(StorageError) as info:
        atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert (info.value.status_code, info.value.error) == (500, "storage_error")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "job_id", ["..", "../" + JOB, JOB + "/..", "/etc", "%2e%2e", JOB.upper(), JOB[:-1] + "/"]
)
def test_traversal_job_ids_are_rejected(tmp_path, job_id):
    storage = JobStorage(tmp_path)
    with pytest.raises(GatewayError) as info:
        storage.job_dir(job_id)
    assert info.value.error == "invalid_job_id"


@pytest.mark.parametrize(
    "name",
    [
        "../job.json",
        "/etc/passwd",
        "portrait.gif",
        "..",
        "portrait.png/../../x",
        "file-1.png",
        "a/portrait.png",
    ],
)
def test_unexpected_file_names_are_rejected(tmp_path, name):
    storage = JobStorage(tmp_path)
    with pytest.raises(GatewayError):
        storage.file_path(JOB, name)


def test_symlinked_job_folder_cannot_escape(tmp_path):
    storage = JobStorage(tmp_path / "out")
    storage.ensure_ready()
    outside = tmp_path / "outside"
    outside.mkdir()
    (storage.jobs_root / JOB).symlink_to(outside, target_is_directory=True)
    with pytest.raises(GatewayError):
        storage.job_dir(JOB)


def test_missing_file_is_404(tmp_path):
    storage = JobStorage(tmp_path)
    with pytest.raises(GatewayError) as info:
        storage.existing_file(JOB, "portrait.png")
    assert (info.value.status_code, info.value.error) == (404, "not_found")


def test_metadata_persists_across_instances(tmp_path):
    first = JobStorage(tmp_path)
    first.ensure_ready()
    record = _record()
    record.result = {"face_count": 1}
    record.files = {"png": "portrait.png"}
    first.save(record)
    second = JobStorage(tmp_path)
    loaded = second.require(JOB)
    assert loaded.result == {"face_count": 1}
    assert loaded.files == {"png": "portrait.png"}
    assert [r.job_id for r in second.iter_records()] == [JOB]


def test_corrupt_metadata_reads_as_missing(tmp_path):
    storage = JobStorage(tmp_path)
    storage.write_file(JOB, "job.json", b"{not json")
    assert storage.load(JOB) is None
    with pytest.raises(GatewayError) as info:
        storage.require(JOB)
    assert info.value.status_code == 404


def test_delete(tmp_path):
    storage = JobStorage(tmp_path)
    storage.save(_record())
    storage.write_file(JOB, "portrait.png", b"x")
    assert storage.delete(JOB) is True
    assert not (storage.jobs_root / JOB).exists()
    assert storage.delete(JOB) is False


def test_updates_never_resurrect_a_deleted_job(tmp_path):
    storage = JobStorage(tmp_path)
    storage.save(_record(status="running"))
    storage.save(_record(status="running"), create=False)  # an update of an existing job
    assert storage.delete(JOB) is True
    with pytest.raises(JobGone) as info:
        storage.save(_record(status="completed"), create=False)
    assert info.value.status_code == 404
    with pytest.raises(JobGone):
        storage.write_file(JOB, "portrait.png", b"png", create=False)
    assert not (storage.jobs_root / JOB).exists()
    assert not list(storage.jobs_root.iterdir()), "no trash left behind"


def test_delete_races_with_a_worker_updating_the_job(tmp_path):
    """A worker thread rewriting a job's files while it is deleted: the delete always succeeds,
    and the job never comes back (seen as a 500 from DELETE under load before the fix)."""
    import threading

    storage = JobStorage(tmp_path)
    for round_number in range(30):
        storage.save(_record(status="running"))
        stop = threading.Event()
        gone = threading.Event()

        def worker(stop=stop, gone=gone):
            while not stop.is_set():
                try:
                    storage.save(_record(status="running"), create=False)
                    storage.write_file(JOB, "portrait.png", b"x" * 4096, create=False)
                except JobGone:
                    gone.set()
                    return

        thread = threading.Thread(target=worker)
        thread.start()
        time.sleep(0.002 * (round_number % 5))
        assert storage.delete(JOB) is True
        thread.join(timeout=10)
        stop.set()
        assert gone.is_set(), "the worker saw the deletion"
        assert storage.load(JOB) is None and not (storage.jobs_root / JOB).exists()


def test_start_up_removes_trash_left_by_a_cut_short_deletion(tmp_path):
    storage = JobStorage(tmp_path)
    storage.ensure_ready()
    leftover = storage.jobs_root / f"{JobStorage.TRASH_PREFIX}{JOB}-1234"
    leftover.mkdir()
    (leftover / "job.json").write_text("{}")
    storage.ensure_ready()
    assert not leftover.exists()
    assert list(storage.iter_records()) == []


def test_cleanup_removes_only_old_finished_jobs(tmp_path):
    storage = JobStorage(tmp_path)
    now = time.time()
    old_done = "a" * 32
    old_running = "b" * 32
    fresh_done = "c" * 32
    storage.save(_record(old_done, "completed", now - 100_000))
    storage.save(_record(old_running, "running", now - 100_000))
    storage.save(_record(fresh_done, "failed", now - 10))
    (storage.jobs_root / "not-a-job").mkdir()
    removed = storage.cleanup(max_age_s=24 * 3600, now=now)
    assert removed == [old_done]
    assert sorted(p.name for p in storage.jobs_root.iterdir()) == sorted(
        [old_running, fresh_done, "not-a-job"]
    )
